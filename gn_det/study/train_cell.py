"""One grid cell, run in its own process by gn_det.study.runner: train from CELL_DIR/cell.yaml,
evaluate with the precision/recall evaluator, and write CELL_DIR/train_result.json (status, training
seconds, median s/iter, and a digest of the initial weights to check that cells share them).

    python -m gn_det.study.train_cell CELL_DIR [--resume]

A loss that turns NaN/inf is a result of the cell ("diverged"), not a crash: it is recorded and
the process exits 0. Any other error exits non-zero and the runner records the cell as failed.
"""
import argparse
import hashlib
import os
import statistics
import sys
import time

from detectron2.engine import HookBase

from ..utils.errors import one_line
from ..config import load_cfg
from ..data import register_datasets_from_cfg
from ..engine import Trainer, default_setup
from ..utils.file_io import write_json
from ..utils.machine import peak_rss_mb
from . import step_normalizer  # noqa: F401  registers the controlled design's RetinaNet

CELL_CONFIG = "cell.yaml"
TRAIN_RESULT = "train_result.json"


class StepTimer(HookBase):
    """Seconds of each training iteration (other hooks' per-step work included) and of the whole
    training loop, the final evaluation (run in after_train) excluded."""

    def __init__(self):
        self.steps, self.start, self.end = [], None, None

    def before_train(self):
        self.start = self.end = time.perf_counter()

    def before_step(self):
        self._step_start = time.perf_counter()

    def after_step(self):
        self.end = time.perf_counter()
        self.steps.append(self.end - self._step_start)


def weights_digest(model) -> str:
    """sha256 (16 hex digits) over the state dict's names and bytes: equal digests mean equal
    weights and buffers."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_cell(cell_dir: str, resume: bool = False) -> dict:
    """Train and evaluate the cell; returns (and writes) the train_result.json content."""
    config_file = os.path.join(cell_dir, CELL_CONFIG)
    cfg = load_cfg(config_file)
    register_datasets_from_cfg(cfg)
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file=config_file, resume=resume,
                                          eval_only=False))  # logging, config.yaml, SEED
    trainer = Trainer(cfg)
    init_digest = weights_digest(trainer.model)
    timer = StepTimer()
    trainer.register_hooks([timer])
    trainer.resume_or_load(resume=resume)
    start_iter, status, error = trainer.start_iter, "done", ""
    started = time.perf_counter()
    try:
        trainer.train()
    except FloatingPointError as e:  # non-finite loss: the cell diverged
        status, error = "diverged", one_line(e)
    total = time.perf_counter() - started
    train_s = (timer.end - timer.start) if timer.start is not None else 0.0
    metrics_file = os.path.join(cfg.OUTPUT_DIR, "inference", cfg.DATASETS.TEST[0], "metrics.json")
    result = {
        "status": status,
        "error": error,
        "start_iter": start_iter,
        "iterations": len(timer.steps),  # completed in this process
        "max_iter": cfg.SOLVER.MAX_ITER,
        "train_s": round(train_s, 2),
        "s_per_iter": round(statistics.median(timer.steps), 4) if timer.steps else None,
        "eval_s": round(total - train_s, 2) if status == "done" else None,
        "init_digest": init_digest,
        "metrics_file": metrics_file if status == "done" else "",
        "peak_rss_mb": peak_rss_mb(),  # this process, training and evaluation
    }
    if status == "done" and not os.path.isfile(metrics_file):
        raise FileNotFoundError(f"training finished but the evaluator wrote no {metrics_file}; "
                                f"DATASETS.TEST[0] must be a COCO-format dataset")
    write_json(os.path.join(cell_dir, TRAIN_RESULT), result, indent=1)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cell_dir", help=f"the cell's folder, holding {CELL_CONFIG}")
    ap.add_argument("--resume", action="store_true",
                    help="continue from the folder's last checkpoint instead of iteration 0")
    args = ap.parse_args(argv)
    train_cell(args.cell_dir, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
