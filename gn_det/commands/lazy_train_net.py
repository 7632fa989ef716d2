"""Train or evaluate a detector from a LazyConfig (Python) config with gn_det's pieces: the CLI of
detectron2's tools/lazyconfig_train_net.py (--config-file x.py, --eval-only, --resume,
--num-gpus, --num-machines, --machine-rank, --dist-url, trailing key=value overrides), plus
gradient accumulation (train.accumulate_steps), atomic checkpoints, the precision/recall
evaluator, datasets from the config (datasets.coco_format), CPU when CUDA is absent, and final
metrics in train.output_dir/metrics_final.json. Bad input ends in one `lazy_train_net: error:`
line and exit status 2, from any process; --debug (or GN_DET_DEBUG=1) shows the traceback."""
import time

from ..cli import quiet_logged_tracebacks, run_cli
from ..config import load_lazy_cfg
from ..data import register_datasets_from_lazy_cfg
from ..engine import default_setup, launch_cli, write_final_metrics
from ..engine.lazy_train import do_eval, do_train


def main(args):
    quiet_logged_tracebacks()  # in each process: a user error is one line in the log too
    cfg = load_lazy_cfg(args.config_file, args.opts)
    register_datasets_from_lazy_cfg(cfg)
    default_setup(cfg, args)
    start = time.perf_counter()
    if args.eval_only:
        results, iteration = do_eval(cfg, resume=args.resume), None
    else:
        results, iteration = do_train(cfg, resume=args.resume), cfg.train.max_iter
    write_final_metrics(cfg.train.output_dir, args.config_file, iteration, start, results)
    return results


def run() -> None:
    run_cli(lambda: launch_cli(main), "lazy_train_net")


if __name__ == "__main__":
    run()
