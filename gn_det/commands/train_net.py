"""Train or evaluate a detector with GN / GN+WS components: detectron2's train_net CLI
(--config-file, --num-gpus, --num-machines, --machine-rank, --dist-url, --resume, --eval-only,
trailing opts), CPU when CUDA is absent, final metrics in OUTPUT_DIR/metrics_final.json. Bad input
(config, dataset, weights, a NaN loss) ends in one `train_net: error:` line and exit status 2, from
any process; --debug (or GN_DET_DEBUG=1) shows the traceback."""
import time

from ..checkpoint import AtomicCheckpointer
from ..cli import quiet_logged_tracebacks, run_cli
from ..config import load_cfg
from ..data import check_num_classes, register_datasets_from_cfg
from ..engine import Trainer, default_setup, launch_cli, write_final_metrics
from ..engine.inference import prepare_eval_model


def setup(args):
    cfg = load_cfg(args.config_file, args.opts)
    register_datasets_from_cfg(cfg)
    check_num_classes(cfg)
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
        prepare_eval_model(model, cfg)  # MODEL.PRECISION, MODEL.SCORE_THRESHOLDS_FILE
        results, iteration = Trainer.test(cfg, model), None
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        results, iteration = getattr(trainer, "_last_eval_results", {}), trainer.iter
    write_final_metrics(cfg.OUTPUT_DIR, args.config_file, iteration, start, results)
    return results


def run() -> None:
    run_cli(lambda: launch_cli(main), "train_net")


if __name__ == "__main__":
    run()
