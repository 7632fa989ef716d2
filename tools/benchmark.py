#!/usr/bin/env python
"""gn_det benchmarks, one entry point: `python tools/benchmark.py NAME [--quick] [--repeats N]`.

Each benchmark is a function registered in BENCHMARKS with a one-line description; it returns a
dict of numbers, printed and optionally written as JSON (--json). Timings are medians over
repeats; ratios of timings are medians of paired (side-by-side) ratios with a 95 % bootstrap
interval, and a target is MET only when the whole interval is below it (UNRESOLVED when the
interval straddles it). Add one by writing `def bench_x(args) -> dict` and a BENCHMARKS entry.

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
    export inference s/img of eager GN-all vs GN+WS eager unfolded, eager folded, TorchScript and
           ONNX Runtime, in one process, interleaved: RetinaNet R50-FPN at 512x768 and the toy
           R-18 at 256 px (--quick: 128x192 and 64 px); --callgrind adds instruction counts of
           eager folded vs eager GN-all (toy, 64 px)
    export_accuracy
           exported vs eager detections per norm (GN, LN, IN, GN+WS, BN), TorchScript and ONNX
           Runtime, and eager float32 vs float64: max |dbox| (px, and / box size), max |dscore|
           (toy R-18 with random weights made like trained; --size, default 256x256)

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
from gn_det.benchmark import export as export_bench  # noqa: E402
from gn_det.utils.file_io import write_json  # noqa: E402
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


def bench_export(args) -> Dict:
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    models = args.models.split(",") if args.models else tuple(export_bench.MODELS)
    return export_bench.export_benchmark(args.config_dir, models=models, repeats=args.repeats,
                                         quick=args.quick, size=size, clock=args.clock,
                                         callgrind=args.callgrind)


def bench_export_accuracy(args) -> Dict:
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else (
        (64, 64) if args.quick else (256, 256))
    norms = args.norms.split(",") if args.norms else tuple(export_bench.ACCURACY_NORMS)
    return export_bench.accuracy_benchmark(args.config_dir, size, norms)


BENCHMARKS: Dict[str, Benchmark] = {
    "gn": Benchmark(bench_gn, "GroupNorm fwd+bwd vs naive GN, BatchNorm, FrozenBN"),
    "ws": Benchmark(bench_ws, "WS conv vs plain conv, train and eval (folded / unfolded)"),
    "e2e": Benchmark(bench_e2e, "RetinaNet R50-FPN train s/iter, peak RSS, inference s/img"),
    "eval": Benchmark(bench_eval, "COCOeval alone vs. + P/R at 4 score x 2 IoU thresholds "
                                  "(+ the confusion matrix)"),
    "export": Benchmark(bench_export, "inference: eager vs folded vs TorchScript vs ONNX Runtime"),
    "export_accuracy": Benchmark(bench_export_accuracy,
                                 "exported vs eager detections per norm, and float32 vs 64"),
}


def target_lines(name: str, result: Dict) -> list:
    """One line per target of the issue: measured ratio (with its interval where the benchmark
    gives one), target, and the verdict: MET / MISSED, or UNRESOLVED when the interval straddles
    the target (ratios where lower is better; e2e adds the CPU-time ratio)."""
    lines = []
    if name in ("gn", "ws"):
        for label, t in result.get("targets", {}).items():
            measured = t.get("max", t.get("summed"))
            how = "worst shape" if "max" in t else "all shapes summed"
            lines.append((f"{name} {label} ({how})", measured, t.get("ci"), t["target"], None))
    elif name == "e2e":
        for label, t in result.get("ratios", {}).items():
            cpu = (t["cpu_ratio"], t.get("cpu_ci")) if "cpu_ratio" in t else None
            lines.append((label, t["ratio"], t.get("ci"), t["target"], cpu))
    elif name == "eval":
        lines.append(("eval (COCOeval + P/R) / COCOeval", result["ratio"], None,
                      result["budget_ratio"], None))
        lines.append(("eval (COCOeval + P/R + confusion matrix) / COCOeval",
                      result["ratio_with_confusion"], None, result["budget_ratio"], None))
    elif name == "export":
        for label, t, target in export_bench.ratio_lines(result):
            lines.append((label, t["ratio"], [t["low"], t["high"]], target, None))
    out = []
    for label, measured, ci, target, cpu in lines:
        out.append(f"  {label}: {_with_ci(measured, ci)}"
                   + (f", CPU time {_with_ci(*cpu)}" if cpu is not None else "")
                   + (f" (target <= {target:.2f}x): {verdict(measured, ci, target)}"
                      if target is not None else " (no target): reported"))
    if name == "e2e":
        for label, t in result.get("noise_floor", {}).items():
            out.append(f"  noise floor, same network: {label}: 1.00 "
                       f"{'within' if t['contains_1'] else 'OUTSIDE'} [{t['ci'][0]:.3f}, "
                       f"{t['ci'][1]:.3f}] (CPU time: "
                       f"{'within' if t['cpu_contains_1'] else 'OUTSIDE'})")
    if name == "export_accuracy":
        for norm, row in result.get("rows", {}).items():
            if "skipped" in row:
                out.append(f"  {norm}: skipped ({row['skipped']})")
                continue
            for what in next(iter(row.values())):
                cells = [cell[what] for cell in row.values()]
                out.append(f"  {norm} {what}: max |dbox| "
                           f"{max(c['max_box_px'] for c in cells):.2g} px "
                           f"({max(c['max_box_rel'] for c in cells):.2g} x box size), max "
                           f"|dscore| {max(c['max_score'] for c in cells):.2g}; matched "
                           f"{sum(c['matched'] for c in cells)}/"
                           f"{sum(c['reference'] for c in cells)}")
    if name == "export" and "callgrind" in result:
        cg = result["callgrind"]
        out.append(f"  export callgrind {cg['model']} {cg['size']}: eager GN+WS folded / eager "
                   f"GN-all instructions per image: {cg['folded_vs_gn_all']:.4f}x (target <= "
                   f"1.00x): {'MET' if cg['folded_vs_gn_all'] <= 1.0 else 'MISSED'}")
    return out


def _with_ci(measured: float, ci) -> str:
    return f"{measured:.3f}x" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def verdict(measured: float, ci, target: float) -> str:
    """MET / MISSED from the interval when there is one (UNRESOLVED if it straddles the target),
    else from the measured value."""
    if not ci:
        return "MET" if measured <= target else "MISSED"
    if ci[1] <= target:
        return "MET"
    return "MISSED" if ci[0] > target else "UNRESOLVED"


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
                    help="gn, ws, export: wall = elapsed time (default); cpu = this process's "
                         "CPU time, all threads (with --threads 1, robust to others' load); "
                         "e2e always reports both")
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
    group = ap.add_argument_group("export (also --size for the r50 model, --clock, --config-dir)")
    group.add_argument("--models", default="",
                       help=f"comma-separated subset of: {', '.join(export_bench.MODELS)} "
                            f"(default all)")
    group.add_argument("--callgrind", action="store_true",
                       help="also count instructions (valgrind, ~10 min on 2 cores)")
    group.add_argument("--norms", default="",
                       help=f"export_accuracy: comma-separated subset of: "
                            f"{', '.join(export_bench.ACCURACY_NORMS)} (default all)")
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
    bad = [n for n in args.norms.split(",") if n and n not in export_bench.ACCURACY_NORMS]
    if bad:
        ap.error(f"--norms: unknown {', '.join(bad)}; valid: "
                 f"{', '.join(export_bench.ACCURACY_NORMS)}")
    bad = [m for m in args.models.split(",") if m and m not in export_bench.MODELS]
    if bad:
        ap.error(f"--models: unknown {', '.join(bad)}; valid: {', '.join(export_bench.MODELS)}")
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
    header = ("largest differences per detection" if args.name == "export_accuracy"
              else "ratios (lower is better)")
    print(f"{args.name} {header}:", *target_lines(args.name, result), sep="\n")
    if args.json:
        write_json(args.json, {args.name: result}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
