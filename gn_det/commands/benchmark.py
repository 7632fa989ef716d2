"""gn_det benchmarks, one entry point: `gn-det-benchmark NAME [--quick] [--repeats N]` (or
`python tools/benchmark.py NAME ...`).

Each benchmark is a function registered in gn_det.benchmark.catalog.BENCHMARKS with a one-line
description; it returns a dict of numbers, printed and optionally written as JSON (--json).
Timings are medians over repeats; ratios of timings are medians of paired (side-by-side) ratios
with a 95 % bootstrap interval, and a target is MET only when the whole interval is below it
(UNRESOLVED when the interval straddles it). Add one by writing `def bench_x(args) -> dict` and a
BENCHMARKS entry there.

    gn     GroupNorm forward+backward at R50-FPN shapes (N=2, 512x768 input): ours vs naive GN,
           BatchNorm (train), FrozenBN, channels_last (--quick: feature maps 4x smaller)
    gn_routes
           bf16 channels_last GroupNorm forward+backward by route (torch's kernel, the
           per-image backward, the NCHW round trip) vs gn_det's GroupNorm, which picks by map
           size: 2 images at 416x576 and 8 at 160 px (--quick: feature maps 4x smaller)
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
import json
import re

import torch

from ..benchmark import e2e, eval_speed, gpu, precision, timing
from ..benchmark import export_speed as export_bench
from ..benchmark.catalog import BENCHMARKS, CONFIG_DIR
from ..benchmark.report import target_lines
from ..cli import run_cli
from ..utils.file_io import write_json
from ..utils.machine import load_average, machine_info


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
    eval_speed.add_arguments(ap)
    gpu.add_arguments(ap)
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
    group = ap.add_argument_group("precision")
    group.add_argument("--parts", default="",
                       help=f"comma-separated subset of: {', '.join(precision.PARTS)} "
                            f"(default all)")
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
    bad = [p for p in args.parts.split(",") if p and p not in precision.PARTS]
    if bad:
        ap.error(f"--parts: unknown {', '.join(bad)}; valid: {', '.join(precision.PARTS)}")
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


def run() -> None:
    run_cli(main, "benchmark")


if __name__ == "__main__":
    run()
