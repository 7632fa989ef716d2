"""Evaluation speed: tools/evaluate.py (default outputs, faster-coco-eval) against pycocotools alone
on the seeded synthetic COCO-sized sets, each run in its own process, interleaved, with wall
time, CPU time and peak RSS; and the import cost of the evaluator.

"pycocotools alone" is the COCO API demo: COCO(gt file), loadRes(results file), COCOeval
evaluate / accumulate / summarize. The sets (gn_det.evaluation.synthetic, seed 0: 500 and
5,000 images, 80 classes, 100 detections per image) are generated once into --data-dir.
Results: docs/PERFORMANCE.md.
"""
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from typing import Dict, List

from ..evaluation.synthetic import make_coco_pair
from ..study.runner import run_process
from ..utils.file_io import write_json
from ..utils.machine import cpu_model, load_average, usable_cores
from .timing import paired_ratio

HELP = ("tools/evaluate.py (default outputs) vs pycocotools alone on the synthetic 500 / 5,000-"
        "image sets: wall, CPU, peak RSS; evaluator import cost")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVALUATE = os.path.join(REPO, "tools", "evaluate.py")
TARGETS = {"ratio_5000": 0.35, "ratio_500": 0.6, "rss_ratio_5000": 1.0,
           "import_cpu_s": 0.5, "import_rss_mb": 150.0}
PYCOCOTOOLS_ALONE = (
    "import contextlib, io, sys\n"
    "from pycocotools.coco import COCO\n"
    "from pycocotools.cocoeval import COCOeval\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n"
    "    gt = COCO(sys.argv[1]); dt = gt.loadRes(sys.argv[2])\n"
    "    e = COCOeval(gt, dt, 'bbox'); e.evaluate(); e.accumulate(); e.summarize()\n"
    "print(list(e.stats))\n")
# the child reports its own CPU time and VmHWM after the imports (exact for a short process)
IMPORT_PROBE = (
    "import time, runpy, sys\n"
    "engine = sys.argv[2]\n"
    "sys.argv = [sys.argv[1], '--help']\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    "if engine != '-':\n"
    "    from gn_det.evaluation.engine import coco_classes\n"
    "    coco_classes(engine)\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "heavy = sorted(m for m in ('torch', 'detectron2', 'cv2', 'matplotlib') if m in sys.modules)\n"
    "print('IMPORT', time.process_time(), int(hwm) / 1024, ','.join(heavy), file=sys.stderr)\n")


def add_arguments(parser) -> None:
    group = parser.add_argument_group("eval")
    group.add_argument("--sizes", type=int, nargs="+", default=None,
                       help="image counts of the synthetic sets (default 500 5000; --quick 500)")
    group.add_argument("--data-dir", default=os.path.join(REPO, "output", "bench", "eval_data"),
                       help="where the synthetic sets are generated once")


def synthetic_set(images: int, data_dir: str) -> Dict[str, str]:
    """Paths of the seeded synthetic set of `images` images (written on first use)."""
    os.makedirs(data_dir, exist_ok=True)
    paths = {k: os.path.join(data_dir, f"{k}_{images}.json") for k in ("gt", "dt")}
    if not all(os.path.isfile(p) for p in paths.values()):
        print(f"eval: generating the synthetic set of {images} images in {data_dir}", flush=True)
        gt, dets = make_coco_pair(num_images=images, dets_per_image=100, num_classes=80, seed=0)
        write_json(paths["gt"], gt)
        write_json(paths["dt"], dets)
    return paths


def _run(command: List[str], log_path: str) -> Dict:
    out = run_process(command, log_path, poll_s=0.05)
    if out["rc"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {out['rc']}); see {log_path}")
    return out


def import_cost(log_dir: str, engine: str = "-") -> Dict:
    """CPU seconds and peak RSS (MB) of a process that runs `tools/evaluate.py --help` (every
    import the tool makes) and, unless `engine` is "-", imports that COCOeval engine as an
    evaluation does; and which heavy modules it loaded."""
    log = os.path.join(log_dir, f"import_{engine}.log")
    open(log, "w").close()
    _run([sys.executable, "-c", IMPORT_PROBE, EVALUATE, engine], log)
    with open(log, encoding="utf-8") as f:
        line = [x for x in f if x.startswith("IMPORT ")][-1].split()
    return {"cpu_s": round(float(line[1]), 3), "peak_rss_mb": round(float(line[2]), 1),
            "heavy_modules": line[3].split(",") if len(line) > 3 else []}


def run(args) -> Dict:
    sizes = args.sizes or ([500] if args.quick else [500, 5000])
    repeats = args.repeats
    log_dir = os.path.join(args.data_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    out = {"versions": versions(), "cpu": cpu_model(), "cores": usable_cores(),
           "load_avg_1m_before": load_average(), "repeats": repeats, "sizes": {}}
    out["import"] = import_cost(log_dir)
    out["import_with_engine"] = import_cost(log_dir, "faster")
    for key, what in (("import", "tools/evaluate.py"),
                      ("import_with_engine", "tools/evaluate.py + faster-coco-eval")):
        print(f"eval: import of {what}: {out[key]['cpu_s']} s CPU, "
              f"{out[key]['peak_rss_mb']} MB", flush=True)
    for images in sizes:
        paths = synthetic_set(images, args.data_dir)
        variants = {
            "pycocotools": [sys.executable, "-c", PYCOCOTOOLS_ALONE, paths["gt"], paths["dt"]],
            "evaluate": [sys.executable, EVALUATE, "--gt", paths["gt"], "--dt", paths["dt"],
                         "--out", os.path.join(args.data_dir, f"out_{images}")],
        }
        samples = {name: [] for name in variants}
        loads = []
        start = time.perf_counter()
        for r in range(repeats):
            names = list(variants)[r % 2:] + list(variants)[:r % 2]  # alternate who goes first
            for name in names:
                loads.append(load_average())
                result = _run(variants[name], os.path.join(log_dir, f"{name}_{images}.log"))
                samples[name].append(result)
            print(f"  eval {images} images [{r + 1}/{repeats}] " + ", ".join(
                f"{n} {s[-1]['wall_s']:.1f}s wall / {s[-1]['cpu_s']:.1f}s CPU / "
                f"{s[-1]['peak_rss_mb']:.0f} MB" for n, s in samples.items())
                + f" ({time.perf_counter() - start:.0f}s so far, load {loads[-1]})", flush=True)
        out["sizes"][str(images)] = summarize(samples, loads)
    out["load_avg_1m_after"] = load_average()
    out["targets"] = verdicts(out)
    return out


def summarize(samples: Dict[str, List[Dict]], loads: List[float]) -> Dict:
    """Medians per variant and the paired ratios evaluate / pycocotools (wall, CPU, peak RSS)."""
    med = {n: {k: statistics.median(s[k] for s in runs) for k in ("wall_s", "cpu_s",
                                                                  "peak_rss_mb")}
           for n, runs in samples.items()}
    ratios = {}
    for key in ("wall_s", "cpu_s", "peak_rss_mb"):
        r = paired_ratio([s[key] for s in samples["evaluate"]],
                         [s[key] for s in samples["pycocotools"]])
        ratios[key.split("_")[0] if key != "peak_rss_mb" else "peak_rss"] = r.as_dict()
    return {"median": med, "ratios": ratios, "load_avg_1m": [min(loads), max(loads)]}


def verdicts(result: Dict) -> Dict:
    """Each target of the evaluation issue: measured, target, MET / MISSED."""
    out = {}
    for images, key in (("5000", "ratio_5000"), ("500", "ratio_500")):
        if images in result["sizes"]:
            r = result["sizes"][images]["ratios"]
            out[f"evaluate.py / pycocotools, {images} images (wall)"] = _verdict(
                r["wall"]["ratio"], TARGETS[key], cpu=r["cpu"]["ratio"])
    if "5000" in result["sizes"]:
        out["peak RSS / pycocotools, 5000 images"] = _verdict(
            result["sizes"]["5000"]["ratios"]["peak_rss"]["ratio"], TARGETS["rss_ratio_5000"])
    imp = result["import_with_engine"]
    out["import CPU seconds (tool + engine)"] = _verdict(imp["cpu_s"], TARGETS["import_cpu_s"])
    out["import peak RSS MB (tool + engine)"] = _verdict(imp["peak_rss_mb"],
                                                         TARGETS["import_rss_mb"])
    return out


def _verdict(measured: float, target: float, cpu: float = None) -> Dict:
    v = {"measured": measured, "target": target,
         "verdict": "MET" if measured <= target else "MISSED"}
    if cpu is not None:
        v["cpu_ratio"] = cpu
    return v


def versions() -> Dict[str, str]:
    """Versions of what the measurement depends on (without importing torch)."""
    out = {"python": platform.python_version()}
    for dist in ("faster-coco-eval", "pycocotools", "numpy", "matplotlib", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def target_lines(result: Dict) -> List[str]:
    """One line per target, for the benchmark's summary."""
    lines = []
    for label, v in result["targets"].items():
        cpu = f" (CPU time {v['cpu_ratio']:.3f}x)" if "cpu_ratio" in v else ""
        lines.append(f"  {label}: {v['measured']:.3f}{cpu} (target <= {v['target']}): "
                     f"{v['verdict']}")
    return lines
