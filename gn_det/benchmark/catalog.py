"""The benchmarks `gn-det-benchmark NAME` runs: each a function of the parsed arguments that
returns a dict of numbers, with a one-line description. Results and the decisions they led to:
docs/PERFORMANCE.md."""
import contextlib
import io
import statistics
import time
from typing import Callable, Dict, NamedTuple

from ..model_zoo import config_dir
from ..utils.progress import eta_text
from . import e2e, layers, op_profile, precision
from . import export_speed as export_bench

CONFIG_DIR = str(config_dir())


class Benchmark(NamedTuple):
    run: Callable[..., Dict]
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
        progress = eta_text(r + 1, args.repeats, time.perf_counter() - start)
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


def bench_precision(args) -> Dict:
    return precision.precision_benchmark(args.config_dir, repeats=args.repeats, quick=args.quick,
                                         clock=args.clock)


def bench_precision_profile(args) -> Dict:
    from ..engine.precision import resolve_precision

    return op_profile.profile_benchmark(args.config_dir, resolve_precision("bf16", "cpu"),
                                        quick=args.quick, steps=args.repeats)


BENCHMARKS: Dict[str, Benchmark] = {
    "gn": Benchmark(bench_gn, "GroupNorm fwd+bwd vs naive GN, BatchNorm, FrozenBN"),
    "ws": Benchmark(bench_ws, "WS conv vs plain conv, train and eval (folded / unfolded)"),
    "e2e": Benchmark(bench_e2e, "RetinaNet R50-FPN train s/iter, peak RSS, inference s/img"),
    "eval": Benchmark(bench_eval, "COCOeval alone vs. + P/R at 4 score x 2 IoU thresholds "
                                  "(+ the confusion matrix)"),
    "export": Benchmark(bench_export, "inference: eager vs folded vs TorchScript vs ONNX Runtime"),
    "export_accuracy": Benchmark(bench_export_accuracy,
                                 "exported vs eager detections per norm, and float32 vs 64"),
    "precision": Benchmark(bench_precision, "bf16 fast path vs fp32: R50 GN+WS inference, R-18 "
                                            "real-config training step, the machine's peak"),
    "precision_profile": Benchmark(bench_precision_profile,
                                   "per-op time shares (conv, GN, WS, casts, reorders, ...) of "
                                   "the precision benchmark's runs, fp32 vs bf16"),
}
