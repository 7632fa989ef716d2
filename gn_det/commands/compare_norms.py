"""Norm x per-GPU-batch study: train and evaluate a grid of norm presets x images per GPU x
seeds, in one of two designs, and tabulate / plot AP (mean and 95 % interval over seeds) against
the batch, with verdicts on the differences.

    gn-det-compare-norms --out output/compare_norms            # the default grid
    gn-det-compare-norms --design controlled --seeds 3 --presets bn_all,gn_all --out output/c
    gn-det-compare-norms --presets bn_all,gn_all --batches 1,8 --out output/quick
    gn-det-compare-norms --rebuild-from docs/study/toy/controlled/results.json --out output/r
    gn-det-compare-norms --config my_retinanet.yaml --dataset my_train my_val \\
        --coco-format my_train train.json images/ --coco-format my_val val.json images/ \\
        MODEL.RETINANET.NUM_CLASSES 7 --out output/mine

Designs (--design; gn_det.study.grid has the rules):
  budget       what one small GPU gives (default): b images per optimizer step, no accumulation,
               BASE_LR = lr_per_image x b, MAX_ITER = images / b but at least --min-steps
  controlled   only the norm's batch varies: every cell steps on --effective-batch E images
               (default: the largest batch) as b images per forward x E/b accumulated
               micro-steps, with the same LR, iterations and schedule; RetinaNet's loss is
               normalized per optimizer step, aspect-ratio grouping is off. The cells of a
               batch-independent norm (GN, GN+WS, FRN, EvoNorm-S0) are then the same training up
               to numerics; BN's and BRN's are not
In both, warm-up and LR steps cover the same images / fractions at every batch, and SEED k gives
every cell of that seed the same initial weights (per preset) and data order (the same flips too
with DATALOADER.NUM_WORKERS 0, as in the study configs). The schedule comes from --base-config
(BASE_LR / IMS_PER_BATCH, WARMUP_ITERS, STEPS, MAX_ITER) unless flags set it, and is the same for
every preset, --config ones included.

Presets (over --base-config; from scratch, as the toy and real study configs train):
  frozenbn     detectron2's default norms: FrozenBN backbone, no norm in FPN and head. It can
               train only from pretrained BN statistics; from scratch it is an identity affine,
               i.e. no normalization at all
  bn_all       BN in backbone, FPN and head; each forward normalizes over its own images
  gn_fpn_head  GN in FPN and head, FrozenBN (so: unnormalized) backbone
  gn_all       GN in backbone, FPN and head
  gnws_all     GN + Weight Standardization in backbone, FPN and head
  brn_all      Batch Renormalization in backbone, FPN and head
  frn_all      FRN + TLU (timm's) in backbone, FPN and head
  evonorm_all  EvoNorm-S0 (timm's) in backbone, FPN and head
  --config F   any config file is one more preset, named after the file

Each cell lives in OUT/<design>/<preset>/bs<b>/seed<k>/ (cell.yaml, logs, metrics.json of the
recall/precision evaluator, result.json) and runs in its own process. A rerun of the same command
reuses finished cells and continues interrupted ones from their last checkpoint (--restart: from
iteration 0). OUT/<design>/results.csv, results.json, results.md, ap_vs_batch.png and
ap50_vs_batch.png are rewritten after every cell; results.json alone rebuilds them
(--rebuild-from), and continues the study in another checkout or on another machine
(--reuse-from: its finished cells stand in for cells of the same config and training precision).
Intervals: Student's t over seeds (gn_det.study.stats). Trailing KEY VALUE pairs are config
overrides for every cell. Errors are one line (--debug for the traceback).
"""
import argparse
import dataclasses
import logging
import math
import os
import signal
import sys
import time

import torch
from detectron2.data import get_detection_dataset_dicts

from ..cli import run_cli
from ..config import load_cfg
from ..data import register_datasets_from_cfg
from ..engine.precision import precision_from_cfg
from ..model_zoo import config_dir
from ..study.grid import (DEFAULT_BATCHES, DEFAULT_PRESETS, DESIGNS, PRESETS, Grid, Schedule,
                          extra_preset)
from ..study.outputs import (design_folder, dry_run, grid_info, rebuild, warn_if_busy,
                             write_outputs)
from ..study.estimate import estimate_grid, format_estimate, time_steps
from ..study.runner import run_grid
from ..utils.file_io import read_json

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
    g.add_argument("--design", default="budget", choices=DESIGNS,
                   help="budget (default): b images per optimizer step; controlled: the same "
                        "optimizer batch in every cell, b images per forward")
    g.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                   help=f"comma-separated built-in presets ({', '.join(PRESETS)}), or 'none' to "
                        f"run only --config ones (default: {','.join(DEFAULT_PRESETS)})")
    g.add_argument("--batches", type=_int_list, default=list(DEFAULT_BATCHES),
                   help="comma-separated images per GPU (default: 1,2,4,8)")
    g.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="a config file to run as one more preset (repeatable)")
    g.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="seeds per cell: SEED --seed .. --seed + N - 1 (default 1)")
    g.add_argument("--effective-batch", type=int, default=0, metavar="E",
                   help="controlled design: images per optimizer step (default: the largest "
                        "batch); every batch must divide it")
    g.add_argument("--preset-batches", action="append", default=[], metavar="PRESET=B,B",
                   help="run PRESET at only these of --batches (repeatable), e.g. a "
                        "batch-independent norm in the controlled design, whose cells are one "
                        "training at every batch")
    g.add_argument("--reference", metavar="PRESET",
                   help="the preset the verdicts compare the others with at each batch "
                        "(default: bn_all, else the first)")
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
    s.add_argument("--max-images", type=int,
                   help="training images per cell (MAX_ITER x the optimizer's batch), before "
                        "the --min-steps floor")
    s.add_argument("--epochs", type=float,
                   help="the image budget as passes over the training set (rounded up to a "
                        "multiple of every optimizer batch); instead of --max-images")
    s.add_argument("--min-steps", type=int,
                   help="at least this many optimizer steps per cell (default 0: none); a batch "
                        "whose image budget gives fewer trains on more images")
    s.add_argument("--min-steps-batch", type=int, metavar="B",
                   help="instead of --min-steps: at least the steps a batch of B images gets "
                        "from the image budget (budget / B), on any dataset; e.g. 2: larger "
                        "batches get as many updates as 2 images per step")
    s.add_argument("--lr-per-image", type=float, help="BASE_LR per image of the batch, in units "
                   "of the base config's SOLVER.OPTIMIZER, which every cell uses")
    s.add_argument("--warmup-images", type=int, help="images of linear LR warm-up")
    s.add_argument("--steps", type=_fraction_list, metavar="F,F",
                   help="LR drops at these fractions of the schedule")
    s.add_argument("--seed", type=int, help="the first seed (default: the base config's SEED)")
    r = ap.add_argument_group("run")
    r.add_argument("--out", default="output/compare_norms", help="output folder")
    r.add_argument("--jobs", type=int, default=1,
                   help="cells run at once, each its own process (default 1; on a CPU with C "
                        "free cores, --jobs C --threads 1 uses them best)")
    r.add_argument("--threads", type=int, default=0,
                   help="torch threads per cell (OMP_NUM_THREADS; default: torch's choice). "
                        "Multi-threaded torch slows down badly when the CPU is shared")
    r.add_argument("--restart", action="store_true",
                   help="restart interrupted cells from iteration 0 (default: continue from "
                        "their last checkpoint)")
    r.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # the default now
    r.add_argument("--keep-checkpoints", action="store_true",
                   help="keep intermediate checkpoints of finished cells (default: only "
                        "model_final.pth)")
    r.add_argument("--delete-weights", action="store_true",
                   help="keep no checkpoint of a finished cell, model_final.pth included "
                        "(result.json is what the study reads)")
    r.add_argument("--reuse-from", metavar="RESULTS_JSON",
                   help="take finished cells from an earlier results.json (e.g. one committed "
                        "under docs/study/) where config and training precision match, so a "
                        "study continues on another machine or checkout; the rest run")
    r.add_argument("--rebuild-from", metavar="RESULTS_JSON",
                   help="rewrite the tables and plots of a results.json into --out, without "
                        "training, and exit")
    r.add_argument("--dry-run", action="store_true",
                   help="print each cell's iterations / LR / warm-up and exit")
    r.add_argument("--estimate", type=int, metavar="ROUNDS",
                   help="time ROUNDS optimizer steps of every (preset, batch) cell, interleaved "
                        "in one process, print the grid's estimated time and exit")
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
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.epochs is not None and args.max_images is not None:
        ap.error("--epochs and --max-images both set the image budget; give one")
    if args.epochs is not None and not args.epochs > 0:
        ap.error(f"--epochs must be positive, got {args.epochs:g}")
    if args.min_steps_batch is not None and (args.min_steps is not None
                                             or args.min_steps_batch < 1):
        ap.error("--min-steps-batch B (B >= 1) replaces --min-steps; give one")
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
    images = args.max_images
    if args.epochs is not None:
        images = epoch_images(base, args.epochs, args.design, args.batches,
                              args.effective_batch)
    overrides = {"images": images, "lr_per_image": args.lr_per_image,
                 "warmup_images": args.warmup_images, "step_fractions": args.steps,
                 "seed": args.seed, "min_steps": args.min_steps}
    schedule = dataclasses.replace(schedule, **{k: v for k, v in overrides.items()
                                                if v is not None})
    if args.min_steps_batch:
        schedule = dataclasses.replace(schedule,
                                       min_steps=schedule.images // args.min_steps_batch)
    if args.reference and args.reference not in [p.name for p in presets]:
        raise ValueError(f"--reference {args.reference!r} is not one of the grid's presets "
                         f"({', '.join(p.name for p in presets)})")
    return Grid(args.base_config, presets, args.batches, schedule, opts, design=args.design,
                num_seeds=args.seeds, effective_batch=args.effective_batch,
                preset_batches=dict(_preset_batches(x) for x in args.preset_batches))


def _preset_batches(text: str):
    name, _, batches = text.partition("=")
    try:
        values = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        values = []
    if not name or not values:
        raise ValueError(f"--preset-batches {text!r}: expected PRESET=B,B (e.g. gn_all=1,8)")
    return name.strip(), values


def epoch_images(cfg, epochs: float, design: str, batches, effective_batch: int) -> int:
    """`epochs` passes over the training set (the images detectron2's loader keeps), rounded up
    to a multiple of every optimizer batch so that all cells see the same images."""
    kept = len(get_detection_dataset_dicts(
        list(cfg.DATASETS.TRAIN), filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS))
    step = (effective_batch or max(batches)) if design == "controlled" else math.lcm(*batches)
    return max(1, math.ceil(epochs * kept / step)) * step


def read_reusable_rows(path: str) -> list:
    """The cells of a results.json given to --reuse-from (one-line error if it is not one)."""
    data = read_json(path, "--reuse-from results")
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError(f"--reuse-from {path}: not a compare_norms results.json (no 'cells' "
                         f"list)")
    return data["cells"]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.rebuild_from:
        rows, folder = rebuild(args.rebuild_from, args.out)
        print(f"{PROG}: rebuilt the tables and plots of {len(rows)} cells from "
              f"{args.rebuild_from} in {folder}")
        return 0
    grid = build_grid(args)
    # one per preset (--config files may differ); registering checks each one's class count
    firsts, seen = [], set()
    for cell in grid.cells():
        if cell.preset.name not in seen:
            seen.add(cell.preset.name)
            firsts.append(grid.cell_cfg(cell, args.out))
    first = firsts[0]
    if args.dry_run:
        dry_run(grid, args.out)
        return 0
    if args.estimate:
        if args.threads:
            torch.set_num_threads(args.threads)
        est = estimate_grid(grid, time_steps(grid, args.out, args.estimate), args.jobs)
        precision = precision_from_cfg(first, log=False).describe()
        print(format_estimate(est, precision, torch.get_num_threads()))
        return 0
    reuse = read_reusable_rows(args.reuse_from) if args.reuse_from else []
    os.makedirs(args.out, exist_ok=True)
    info = grid_info(grid, argv, first)
    info["grid"].update(jobs=args.jobs, threads=args.threads or None, reference=args.reference)
    folder = design_folder(args.out, grid.design)
    print(f"{PROG}: {grid.design} design, {len(grid.presets)} presets x {len(grid.batches)} "
          f"batches x {len(grid.seeds)} seed(s) = {len(grid.cells())} cells, image budget "
          f"{grid.schedule.images} -> {folder}", flush=True)
    warn_if_busy(args.threads, PROG)
    start = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        rows = run_grid(grid, args.out, resume=not args.restart,
                        keep_checkpoints=args.keep_checkpoints, jobs=args.jobs,
                        threads=args.threads, delete_weights=args.delete_weights,
                        on_update=lambda rows: write_outputs(rows, info, args.out),
                        reuse=reuse, reuse_source=args.reuse_from or "")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to continue (finished cells are "
              f"skipped)", file=sys.stderr)
        return 130
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"{PROG}: grid done in {time.perf_counter() - start:.0f}s; {len(failed)} failed; "
          f"wrote results.csv, results.json, results.md, ap_vs_batch.png, ap50_vs_batch.png in "
          f"{folder}")
    with open(os.path.join(folder, "results.md"), encoding="utf-8") as f:
        print(f.read())
    return 1 if failed else 0


def run() -> None:
    run_cli(lambda: sys.exit(main()), PROG)


if __name__ == "__main__":
    run()
