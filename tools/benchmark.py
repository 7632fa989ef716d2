#!/usr/bin/env python
"""gn_det benchmarks, one entry point: `python tools/benchmark.py NAME [--quick] [--repeats N]`.

Each benchmark is a function registered in BENCHMARKS with a one-line description; it returns a
dict of numbers, printed and optionally written as JSON (--json). Timings are medians over
repeats. Add one by writing `def bench_x(args) -> dict` and a BENCHMARKS entry.

    eval   COCOeval evaluate+accumulate alone vs. the same plus gn_det's P/R/F1 at 4 score x 2 IoU
           thresholds and best-F1 per class (synthetic: 5000 images x 100 detections, 80 classes;
           --quick: 500 images)
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gn_det  # noqa: E402,F401  (compat shims first)


class Benchmark(NamedTuple):
    run: Callable[[argparse.Namespace], Dict]
    help: str


def _eta(done: int, total: int, elapsed: float) -> str:
    left = elapsed / done * (total - done) if done else float("nan")
    return f"ETA {left:.0f}s" if done < total else f"total {elapsed:.0f}s"


def bench_eval(args) -> Dict:
    """Median seconds of COCOeval evaluate+accumulate, and of gn_det's P/R step added on top."""
    from pycocotools.cocoeval import COCOeval

    from gn_det.evaluation.matching import best_f1, counts_at, match_from_cocoeval
    from gn_det.evaluation.results import load_ground_truth, load_results, results_to_coco
    from gn_det.evaluation.synthetic import make_coco_pair

    images = args.images or (500 if args.quick else 5000)
    print(f"eval: synthetic COCO data, {images} images x {args.dets} detections, "
          f"{args.classes} classes", flush=True)
    gt, dets = make_coco_pair(num_images=images, dets_per_image=args.dets,
                              num_classes=args.classes, seed=0)
    coco_gt = load_ground_truth(gt)
    coco_dt = results_to_coco(coco_gt, load_results(dets, coco_gt))
    ious, scores = [0.5, 0.75], [0.05, 0.3, 0.5, 0.7]
    base, extra = [], []
    start = time.perf_counter()
    for r in range(args.repeats):
        cocoeval = COCOeval(coco_gt, coco_dt, "bbox")
        with contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            cocoeval.evaluate()
            cocoeval.accumulate()
            t1 = time.perf_counter()
        matches = match_from_cocoeval(cocoeval, ious)
        counts_at(matches, scores)
        for k in range(len(matches.category_ids)):
            best_f1(matches, ious[0], k)
        t2 = time.perf_counter()
        base.append(t1 - t0)
        extra.append(t2 - t1)
        print(f"  [{r + 1}/{args.repeats}] evaluate+accumulate {t1 - t0:.2f}s, "
              f"+ P/R {t2 - t1:.3f}s; {_eta(r + 1, args.repeats, time.perf_counter() - start)}",
              flush=True)
    b = statistics.median(base)
    with_pr = statistics.median([x + y for x, y in zip(base, extra)])
    return {"images": images, "detections": len(dets), "classes": args.classes,
            "repeats": args.repeats, "cocoeval_s": round(b, 3),
            "pr_s": round(statistics.median(extra), 4), "cocoeval_plus_pr_s": round(with_pr, 3),
            "ratio": round(with_pr / b, 4), "budget_ratio": 1.2}


BENCHMARKS: Dict[str, Benchmark] = {
    "eval": Benchmark(bench_eval, "COCOeval alone vs. + P/R at 4 score x 2 IoU thresholds"),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(BENCHMARKS),
                    help="; ".join(f"{k}: {b.help}" for k, b in BENCHMARKS.items()))
    ap.add_argument("--quick", action="store_true", help="smaller problem, for a fast check")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    group = ap.add_argument_group("eval")
    group.add_argument("--images", type=int, default=0, help="images (default 5000; --quick 500)")
    group.add_argument("--dets", type=int, default=100, help="detections per image")
    group.add_argument("--classes", type=int, default=80, help="categories")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    result = BENCHMARKS[args.name].run(args)
    print(json.dumps({args.name: result}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({args.name: result}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
