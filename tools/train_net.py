#!/usr/bin/env python
"""Train or evaluate a detector with GN / GN+WS components: detectron2's train_net CLI
(--config-file, --num-gpus, --num-machines, --machine-rank, --dist-url, --resume, --eval-only,
trailing opts), CPU when CUDA is absent, final metrics in OUTPUT_DIR/metrics_final.json. Bad input
(config, dataset, weights, a NaN loss) ends in one `train_net: error:` line and exit status 2, from
any process; --debug (or GN_DET_DEBUG=1) shows the traceback."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gn_det  # noqa: E402,F401  (compat shims + registrations before detectron2 submodules)
from detectron2.engine import default_argument_parser  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from gn_det.cli import quiet_logged_tracebacks, run_cli  # noqa: E402
from gn_det.config import load_cfg  # noqa: E402
from gn_det.data import register_datasets_from_cfg  # noqa: E402
from gn_det.engine import Trainer, default_setup, launch  # noqa: E402
from gn_det.engine.checkpoint import AtomicCheckpointer  # noqa: E402
from gn_det.utils.file_io import write_json  # noqa: E402


def setup(args):
    cfg = load_cfg(args.config_file, args.opts)
    register_datasets_from_cfg(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    quiet_logged_tracebacks()  # in each process: a user error is one line in the log too
    cfg = setup(args)
    start = time.perf_counter()
    if args.eval_only:
        model = Trainer.build_model(cfg)
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR,
                           skip_mismatched=cfg.MODEL.SKIP_MISMATCHED_WEIGHTS).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        results, iteration = Trainer.test(cfg, model), None
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results, iteration = getattr(trainer, "_last_eval_results", {}), trainer.iter
    if comm.is_main_process():
        final = {"config_file": args.config_file, "iteration": iteration,
                 "seconds": round(time.perf_counter() - start, 1), "results": results}
        path = os.path.join(cfg.OUTPUT_DIR, "metrics_final.json")
        write_json(path, final, indent=2, default=float)
    return results


def cli():
    parser = default_argument_parser()
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    args = parser.parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    run_cli(cli, "train_net")
