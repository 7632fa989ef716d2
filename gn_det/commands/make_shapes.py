"""Toy detection dataset: filled shapes on cluttered backgrounds, in COCO format (boxes + masks).

    gn-det-make-shapes --out datasets/shapes --train 512 --val 128 --size 256 --seed 0

Writes, under --out only:
    annotations/train.json  annotations/val.json      (COCO instances, iscrowd 0)
    train/train_000000.jpg ...  val/val_000000.jpg ...

Each image has a gradient background with noise, distractor lines and small blobs, then 1..N
shapes of random colour, size and rotation; later shapes may occlude earlier ones, but every
object keeps at least (1 - --max-occlusion) of its area visible. Boxes and polygons describe the
*visible* part. The same --seed gives byte-identical files; each image draws from its own random
stream (seed, split, index), so changing --train does not change the val split. The annotation
json is written last, atomically: its presence means the split is complete.
"""
import argparse
import os
import sys
import time
from typing import List, Optional

from ..datasets.shapes import DEFAULT_CLASSES, SHAPES, ShapesError, generate
from ..utils.text import plural


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="datasets/shapes", help="output folder (created)")
    p.add_argument("--train", type=int, default=512, help="training images")
    p.add_argument("--val", type=int, default=128, help="validation images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                   help=f"comma-separated shapes from: {', '.join(SHAPES)}")
    p.add_argument("--min-objects", type=int, default=1)
    p.add_argument("--max-objects", type=int, default=4)
    p.add_argument("--min-size", type=float, default=0.2,
                   help="smallest shape diameter, as a fraction of the image side")
    p.add_argument("--max-size", type=float, default=0.45,
                   help="largest shape diameter, as a fraction of the image side")
    p.add_argument("--max-occlusion", type=float, default=0.3,
                   help="largest hidden fraction of any object (0 = no overlap)")
    p.add_argument("--clutter", type=int, default=8,
                   help="up to this many distractor lines/blobs per image")
    p.add_argument("--noise", type=float, default=6.0, help="Gaussian pixel noise sigma (0..255)")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    opts = p.parse_args(argv)
    _check_options(opts)
    return opts


def _check_options(opts: argparse.Namespace):
    classes = tuple(c.strip() for c in opts.classes.split(",") if c.strip())
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or len(set(classes)) != len(classes) or not classes:
        raise ShapesError(f"--classes {opts.classes!r}: expected distinct names from "
                          f"{', '.join(SHAPES)}")
    opts.classes = classes
    rules = [
        ("--train", opts.train >= 0, "a count >= 0"),
        ("--val", opts.val >= 0, "a count >= 0"),
        ("--size", 32 <= opts.size <= 4096, "32..4096 pixels"),
        ("--min-objects", 1 <= opts.min_objects <= opts.max_objects,
         "1 <= --min-objects <= --max-objects"),
        ("--min-size", 0 < opts.min_size <= opts.max_size <= 1,
         "0 < --min-size <= --max-size <= 1"),
        ("--max-occlusion", 0 <= opts.max_occlusion < 1, "0 <= value < 1"),
        ("--clutter", opts.clutter >= 0, "a count >= 0"),
        ("--noise", 0 <= opts.noise <= 128, "0..128"),
        ("--seed", opts.seed >= 0, "a non-negative integer"),
    ]
    for flag, ok, valid in rules:
        if not ok:
            raise ShapesError(f"{flag} {getattr(opts, flag[2:].replace('-', '_'))}: "
                              f"expected {valid}")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
        start = time.perf_counter()
        written = generate(opts)
    except (ShapesError, OSError) as e:
        if "--debug" in argv or os.environ.get("GN_DET_DEBUG", "") not in ("", "0"):
            raise
        print(f"make_shapes: error: {e}", file=sys.stderr)
        return 2
    total = opts.train + opts.val
    print(f"wrote {plural(total, 'image')} ({opts.train} train, {opts.val} val, "
          f"{plural(len(opts.classes), 'class')}) in {time.perf_counter() - start:.1f}s: "
          + ", ".join(str(p) for p in written.values()))
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
