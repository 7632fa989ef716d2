"""The benchmarks `gn-det-benchmark NAME` runs: each a function of the parsed arguments that
returns a dict of numbers, with a one-line description. Results and the decisions they led to:
docs/PERFORMANCE.md."""
from typing import Callable, Dict, NamedTuple

from ..model_zoo import config_dir
from . import e2e, eval_speed, layers, op_profile, precision
from . import export_speed as export_bench
from . import gpu

CONFIG_DIR = str(config_dir())


class Benchmark(NamedTuple):
    run: Callable[..., Dict]
    help: str


def bench_gn(args) -> Dict:
    return layers.gn_benchmark(quick=args.quick, repeats=args.repeats, clock=args.clock)


def bench_gn_routes(args) -> Dict:
    return layers.gn_routes_benchmark(quick=args.quick, repeats=args.repeats, clock=args.clock)


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
    parts = args.parts.split(",") if args.parts else precision.PARTS
    return precision.precision_benchmark(args.config_dir, repeats=args.repeats, quick=args.quick,
                                         clock=args.clock, parts=parts)


def bench_precision_profile(args) -> Dict:
    from ..engine.precision import resolve_precision

    return op_profile.profile_benchmark(args.config_dir, resolve_precision("bf16", "cpu"),
                                        quick=args.quick, steps=args.repeats)


BENCHMARKS: Dict[str, Benchmark] = {
    "gn": Benchmark(bench_gn, "GroupNorm fwd+bwd vs naive GN, BatchNorm, FrozenBN"),
    "gn_routes": Benchmark(bench_gn_routes, "bf16 channels_last GroupNorm fwd+bwd by route "
                                            "(torch's kernel, per-image backward, NCHW round "
                                            "trip) against gn_det's choice"),
    "ws": Benchmark(bench_ws, "WS conv vs plain conv, train and eval (folded / unfolded)"),
    "e2e": Benchmark(bench_e2e, "RetinaNet R50-FPN train s/iter, peak RSS, inference s/img"),
    "eval": Benchmark(eval_speed.run, eval_speed.HELP),
    "export": Benchmark(bench_export, "inference: eager vs folded vs TorchScript vs ONNX Runtime"),
    "export_accuracy": Benchmark(bench_export_accuracy,
                                 "exported vs eager detections per norm, and float32 vs 64"),
    "precision": Benchmark(bench_precision, "bf16 fast path vs fp32: R50 GN+WS inference, R-18 "
                                            "real-config training step, the machine's peak"),
    "gpu": Benchmark(gpu.run, gpu.HELP),
    "precision_profile": Benchmark(bench_precision_profile,
                                   "per-op time shares (conv, GN, WS, casts, reorders, ...) of "
                                   "the precision benchmark's runs, fp32 vs bf16"),
}
