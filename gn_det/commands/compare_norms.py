"""Norm x per-GPU-batch study: train and evaluate a grid of norm presets x images per GPU, each
cell from the same seed on the same number of images, and tabulate / plot AP against the batch.

    gn-det-compare-norms --out output/compare_norms            # the default grid
    gn-det-compare-norms --presets bn_all,gn_all --batches 1,8 --out output/quick
    gn-det-compare-norms --config my_retinanet.yaml --dataset my_train my_val \\
        --coco-format my_train train.json images/ --coco-format my_val val.json images/ \\
        MODEL.RETINANET.NUM_CLASSES 7 --out output/mine

Per cell, with b images per GPU (one process, no accumulation): SOLVER.IMS_PER_BATCH = b,
MAX_ITER = images / b, BASE_LR = lr_per_image * b (linear scaling), WARMUP_ITERS = warm-up
images / b, LR steps at the same fractions of the schedule, SEED fixed: the same initial weights
per preset and the same image order for every cell (the same flips too with
DATALOADER.NUM_WORKERS 0, as in the default base config). The schedule comes from
--base-config (BASE_LR / IMS_PER_BATCH, WARMUP_ITERS, STEPS, MAX_ITER) unless flags set it, and
is the same for every preset, --config ones included.

Presets (over --base-config; from scratch, as the toy configs train):
  frozenbn     detectron2's default norms: FrozenBN backbone, no norm in FPN and head. Trained
               from scratch FrozenBN is an identity affine, i.e. no normalization at all
  bn_all       BN in backbone, FPN and head; each process normalizes over its own images
  gn_fpn_head  GN in FPN and head, FrozenBN (so: unnormalized) backbone
  gn_all       GN in backbone, FPN and head
  gnws_all     GN + Weight Standardization in backbone, FPN and head
  --config F   any config file is one more preset, named after the file

Each cell lives in OUT/<preset>/bs<b>/ (cell.yaml, logs, metrics.json of the recall/precision
evaluator, result.json) and runs in its own process. Finished cells are skipped on a rerun of the
same command; an interrupted one restarts, or continues from its checkpoint with --resume.
OUT/results.csv, results.json, results.md and ap_vs_batch.png are rewritten after every cell.
Trailing KEY VALUE pairs are config overrides for every cell. Errors are one line (--debug for
the traceback).
"""
import argparse
import dataclasses
import logging
import os
import signal
import sys
import time

from ..cli import run_cli
from ..config import load_cfg
from ..data import register_datasets_from_cfg
from ..model_zoo import config_dir
from ..study.grid import DEFAULT_BATCHES, PRESETS, Grid, Schedule, extra_preset
from ..study.outputs import dry_run, grid_info, warn_if_busy, write_outputs
from ..study.runner import run_grid

DEFAULT_BASE_CONFIG = str(config_dir() / "toy" / "compare_norms_shapes.yaml")
PROG = "compare_norms"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line: `compare_norms: error: ...`."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def _int_list(text: str):
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers "
                                         f"(e.g. 1,2,4,8)") from None
    if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes are distinct integers >= 1 "
                                         f"(e.g. 1,2,4,8)")
    return values


def _fraction_list(text: str):
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of fractions "
                                         f"(e.g. 0.75,0.92; '' for none)") from None


def parse_args(argv=None):
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                       epilog=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("grid")
    g.add_argument("--presets", default=",".join(PRESETS),
                   help=f"comma-separated built-in presets, or 'none' to run only --config ones "
                        f"(default: {','.join(PRESETS)})")
    g.add_argument("--batches", type=_int_list, default=list(DEFAULT_BATCHES),
                   help="comma-separated images per GPU (default: 1,2,4,8)")
    g.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="a config file to run as one more preset (repeatable)")
    g.add_argument("--base-config", default=DEFAULT_BASE_CONFIG, metavar="FILE",
                   help="model, data and schedule the built-in presets start from (default: "
                        "configs/toy/compare_norms_shapes.yaml)")
    d = ap.add_argument_group("data")
    d.add_argument("--dataset", nargs=2, metavar=("TRAIN", "TEST"),
                   help="registered dataset names to train and evaluate on (default: the base "
                        "config's DATASETS.TRAIN / TEST: the toy shapes)")
    d.add_argument("--coco-format", nargs=3, action="append", metavar=("NAME", "JSON", "ROOT"),
                   help="register a COCO-format dataset (repeatable; replaces the base config's "
                        "DATASETS.COCO_FORMAT)")
    s = ap.add_argument_group("schedule (default: from the base config)")
    s.add_argument("--max-images", type=int, help="training images per cell (MAX_ITER x batch)")
    s.add_argument("--lr-per-image", type=float, help="BASE_LR per image of the batch, in units "
                   "of the base config's SOLVER.OPTIMIZER, which every cell uses")
    s.add_argument("--warmup-images", type=int, help="images of linear LR warm-up")
    s.add_argument("--steps", type=_fraction_list, metavar="F,F",
                   help="LR drops at these fractions of the schedule")
    s.add_argument("--seed", type=int, help="SEED of every cell (same initial weights)")
    r = ap.add_argument_group("run")
    r.add_argument("--out", default="output/compare_norms", help="output folder")
    r.add_argument("--jobs", type=int, default=1,
                   help="cells run at once, each its own process (default 1; on a CPU with C "
                        "free cores, --jobs C --threads 1 uses them best)")
    r.add_argument("--threads", type=int, default=0,
                   help="torch threads per cell (OMP_NUM_THREADS; default: torch's choice). "
                        "Multi-threaded torch slows down badly when the CPU is shared")
    r.add_argument("--resume", action="store_true",
                   help="continue interrupted cells from their last checkpoint (default: restart)")
    r.add_argument("--keep-checkpoints", action="store_true",
                   help="keep intermediate checkpoints of finished cells (default: only "
                        "model_final.pth)")
    r.add_argument("--dry-run", action="store_true",
                   help="print each cell's iterations / LR / warm-up and exit")
    r.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                    help="config overrides for every cell")
    args = ap.parse_args(argv)
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]
    if len(args.opts) % 2:
        ap.error(f"trailing opts must be KEY VALUE pairs, got {len(args.opts)} words")
    if args.jobs < 1 or args.threads < 0:
        ap.error(f"--jobs must be >= 1 and --threads >= 0, got {args.jobs} and {args.threads}")
    if args.coco_format and not args.dataset:
        ap.error("--coco-format registers datasets; name the ones to use with --dataset TRAIN TEST")
    return args


def build_grid(args):
    """The grid of the command line; every cell's config is valid (checked by building it)."""
    if args.presets.strip() == "none":
        presets = []
    else:
        names = [n.strip() for n in args.presets.split(",") if n.strip()]
        unknown = [n for n in names if n not in PRESETS]
        if unknown or not names:
            bad = unknown[0] if unknown else args.presets
            raise ValueError(f"--presets: unknown preset {bad!r}; valid: {', '.join(PRESETS)} "
                             f"(or 'none' with --config FILE)")
        presets = [PRESETS[n] for n in names]
    for path in args.config:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--config {path}: no such file")
    presets += [extra_preset(path) for path in args.config]
    if not presets:
        raise ValueError("--presets none leaves no preset; add --config FILE")
    opts = []
    if args.coco_format:
        opts += ["DATASETS.COCO_FORMAT", [list(entry) for entry in args.coco_format]]
    if args.dataset:
        opts += ["DATASETS.TRAIN", (args.dataset[0],), "DATASETS.TEST", (args.dataset[1],)]
    opts += list(args.opts)
    base = load_cfg(args.base_config, opts)
    if not base.DATASETS.CACHE_DIR:  # the grid's dataset cache, as its cells use (Grid.cell_cfg)
        base.DATASETS.CACHE_DIR = os.path.abspath(os.path.join(args.out, "dataset_cache"))
    register_datasets_from_cfg(base)
    schedule = Schedule.from_cfg(base)
    overrides = {"images": args.max_images, "lr_per_image": args.lr_per_image,
                 "warmup_images": args.warmup_images, "step_fractions": args.steps,
                 "seed": args.seed}
    schedule = dataclasses.replace(schedule, **{k: v for k, v in overrides.items()
                                                if v is not None})
    return Grid(args.base_config, presets, args.batches, schedule, opts)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    grid = build_grid(args)
    # one per preset (--config files may differ); registering checks each one's class count
    firsts = [grid.cell_cfg(cell, args.out) for cell in grid.cells()[::len(grid.batches)]]
    first = firsts[0]
    if args.dry_run:
        dry_run(grid, args.out)
        return 0
    os.makedirs(args.out, exist_ok=True)
    info = grid_info(grid, argv, first)
    info["grid"].update(jobs=args.jobs, threads=args.threads or None)
    print(f"{PROG}: {len(grid.presets)} presets x {len(grid.batches)} batches = "
          f"{len(grid.cells())} cells, {grid.schedule.images} images each -> {args.out}",
          flush=True)
    warn_if_busy(args.threads, PROG)
    start = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        rows = run_grid(grid, args.out, resume=args.resume,
                        keep_checkpoints=args.keep_checkpoints, jobs=args.jobs,
                        threads=args.threads,
                        on_update=lambda rows: write_outputs(rows, grid, info, args.out))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to continue (finished cells are "
              f"skipped)", file=sys.stderr)
        return 130
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"{PROG}: grid done in {time.perf_counter() - start:.0f}s; {len(failed)} failed; "
          f"wrote results.csv, results.json, results.md, ap_vs_batch.png in {args.out}")
    with open(os.path.join(args.out, "results.md"), encoding="utf-8") as f:
        print(f.read())
    return 1 if failed else 0


def run() -> None:
    run_cli(lambda: sys.exit(main()), PROG)


if __name__ == "__main__":
    run()
