#!/usr/bin/env python
"""gn_det benchmarks, one entry point: `python tools/benchmark.py NAME [--quick] [--repeats N]`.

Each benchmark is a function registered in BENCHMARKS with a one-line description; it returns a
dict of numbers, printed and optionally written as JSON (--json). Timings are medians over
repeats. Add one by writing `def bench_x(args) -> dict` and a BENCHMARKS entry.

    gn     GroupNorm forward+backward at R50-FPN shapes (N=2, 512x768 input): ours vs naive GN,
           BatchNorm (train), FrozenBN, channels_last (--quick: feature maps 4x smaller)
    ws     WS conv vs plain conv: train forward+backward, eval unfolded / folded, and the
           standardization formulations (--quick: feature maps 4x smaller)
    e2e    RetinaNet R50-FPN, 512x768, batch 2, CPU: train s/iter, peak RSS, inference s/img
           (WS folded and not) for FrozenBN, stock detectron2 GN-all, GN-FPN+head, GN-all,
           GN+WS-all and GN-all / GN+WS-all with MODEL.CHANNELS_LAST, each variant in its own
           process; lists variants that build the same network (--quick: 128x192)
    eval   COCOeval evaluate+accumulate alone vs. the same plus gn_det's P/R/F1 at 4 score x 2 IoU
           thresholds and best-F1 per class (synthetic: 5000 images x 100 detections, 80 classes;
           --quick: 500 images)

Results and the decisions they led to: docs/PERFORMANCE.md.
"""
import argparse
import contextlib
import io
import json
import os
import re
import statistics
import sys
import time
from typing import Callable, Dict, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gn_det  # noqa: E402,F401  (compat shims first)
import torch  # noqa: E402
from gn_det.benchmark import e2e, layers, timing  # noqa: E402
from gn_det.utils.machine import load_average, machine_info  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class Benchmark(NamedTuple):
    run: Callable[[argparse.Namespace], Dict]
    help: str


def bench_eval(args) -> Dict:
    """Median seconds of COCOeval evaluate+accumulate, of gn_det's P/R step added on top, and of
    the confusion matrix at the main thresholds (IoU 0.5, score 0.5) after that."""
    from pycocotools.cocoeval import COCOeval

    from gn_det.evaluation.confusion import confusion_matrix, outcomes_at
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
    base, extra, confusion = [], [], []
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
        confusion_matrix(matches, outcomes_at(cocoeval, matches, ious[0], 0.5),
                         [str(c) for c in matches.category_ids])
        t3 = time.perf_counter()
        base.append(t1 - t0)
        extra.append(t2 - t1)
        confusion.append(t3 - t2)
        progress = timing.eta(r + 1, args.repeats, time.perf_counter() - start)
        print(f"  [{r + 1}/{args.repeats}] evaluate+accumulate {t1 - t0:.2f}s, "
              f"+ P/R {t2 - t1:.3f}s, + confusion matrix {t3 - t2:.3f}s; {progress}", flush=True)
    b = statistics.median(base)
    with_pr = statistics.median([x + y for x, y in zip(base, extra)])
    with_all = statistics.median([x + y + z for x, y, z in zip(base, extra, confusion)])
    return {"images": images, "detections": len(dets), "classes": args.classes,
            "repeats": args.repeats, "cocoeval_s": round(b, 3),
            "pr_s": round(statistics.median(extra), 4), "cocoeval_plus_pr_s": round(with_pr, 3),
            "ratio": round(with_pr / b, 4), "budget_ratio": 1.2,
            "confusion_s": round(statistics.median(confusion), 4),
            "ratio_with_confusion": round(with_all / b, 4)}


def bench_gn(args) -> Dict:
    return layers.gn_benchmark(quick=args.quick, repeats=args.repeats, clock=args.clock)


def bench_ws(args) -> Dict:
    return layers.ws_benchmark(quick=args.quick, repeats=args.repeats, clock=args.clock)


def bench_e2e(args) -> Dict:
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    variants = args.variants.split(",") if args.variants else tuple(e2e.VARIANTS)
    return e2e.e2e_benchmark(args.config_dir, quick=args.quick, repeats=args.repeats, size=size,
                             batch=args.batch, variants=variants, threads=args.threads)


BENCHMARKS: Dict[str, Benchmark] = {
    "gn": Benchmark(bench_gn, "GroupNorm fwd+bwd vs naive GN, BatchNorm, FrozenBN"),
    "ws": Benchmark(bench_ws, "WS conv vs plain conv, train and eval (folded / unfolded)"),
    "e2e": Benchmark(bench_e2e, "RetinaNet R50-FPN train s/iter, peak RSS, inference s/img"),
    "eval": Benchmark(bench_eval, "COCOeval alone vs. + P/R at 4 score x 2 IoU thresholds "
                                  "(+ the confusion matrix)"),
}


def target_lines(name: str, result: Dict) -> list:
    """One line per target of the issue: measured ratio, target, met or missed (ratios where
    lower is better; e2e adds the CPU-time ratio)."""
    lines = []
    if name in ("gn", "ws"):
        for label, t in result.get("targets", {}).items():
            measured = t.get("max", t.get("summed"))
            how = "worst shape" if "max" in t else "all shapes summed"
            lines.append((f"{name} {label} ({how})", measured, t["target"], None))
    elif name == "e2e":
        for label, t in result.get("ratios", {}).items():
            lines.append((label, t["ratio"], t["target"], t.get("cpu_ratio")))
    elif name == "eval":
        lines.append(("eval (COCOeval + P/R) / COCOeval", result["ratio"], result["budget_ratio"],
                      None))
        lines.append(("eval (COCOeval + P/R + confusion matrix) / COCOeval",
                      result["ratio_with_confusion"], result["budget_ratio"], None))
    out = []
    for label, measured, target, cpu in lines:
        verdict = ("reported" if target is None else
                   "MET" if measured <= target else "MISSED")
        cpu_text = f", CPU time {cpu:.3f}x" if cpu is not None else ""
        target_text = f"target <= {target:.2f}x" if target is not None else "no target"
        out.append(f"  {label}: {measured:.3f}x{cpu_text} ({target_text}): {verdict}")
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(BENCHMARKS),
                    help="; ".join(f"{k}: {b.help}" for k, b in BENCHMARKS.items()))
    ap.add_argument("--quick", action="store_true", help="smaller problem, for a fast check")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (default: torch's own choice); 1 is robust to "
                         "other processes' load, which stalls every multi-threaded op")
    ap.add_argument("--clock", choices=sorted(timing.CLOCKS), default="wall",
                    help="gn, ws: wall = elapsed time (default); cpu = this process's CPU "
                         "time, all threads (with --threads 1, robust to others' load); e2e "
                         "always reports both")
    group = ap.add_argument_group("eval")
    group.add_argument("--images", type=int, default=0, help="images (default 5000; --quick 500)")
    group.add_argument("--dets", type=int, default=100, help="detections per image")
    group.add_argument("--classes", type=int, default=80, help="categories")
    group = ap.add_argument_group("e2e")
    group.add_argument("--size", default="", help="input HxW (default 512x768; --quick 128x192)")
    group.add_argument("--batch", type=int, default=2, help="images per training step")
    group.add_argument("--variants", default="",
                       help=f"comma-separated subset of: {', '.join(e2e.VARIANTS)} (default all)")
    group.add_argument("--config-dir", default=CONFIG_DIR, help="the repository's configs/")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.size and not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", args.size.lower()):
        ap.error(f"--size {args.size!r}: expected HxW, e.g. 512x768")
    if args.threads < 0:
        ap.error("--threads must be >= 0 (0: torch's default)")
    if args.batch < 1:
        ap.error("--batch must be >= 1")
    bad = [v for v in args.variants.split(",") if v and v not in e2e.VARIANTS]
    if bad:
        ap.error(f"--variants: unknown {', '.join(bad)}; valid: {', '.join(e2e.VARIANTS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    print(f"{args.name}: {machine['cpu']}, {machine['cores']} CPUs, torch "
          f"{machine['torch']} with {machine['torch_threads']} threads, load average "
          f"{machine['load_avg_1m']}", flush=True)
    result = BENCHMARKS[args.name].run(args)
    result["machine"] = dict(machine, load_avg_1m_after=load_average())
    print(json.dumps({args.name: result}, indent=1))
    print(f"{args.name} ratios (lower is better):", *target_lines(args.name, result), sep="\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({args.name: result}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
