"""The steps of one tools/evaluate.py run with the time each is expected to take, from the input's
size: the weights of its gn_det.utils.progress.Phases, so that the first ETA (after the first
step, which also measures how fast the machine is today) is honest although the steps differ
tenfold in length.

The per-megabyte costs are the step times tools/evaluate.py logs on the synthetic COCO-sized sets
(gn_det.evaluation.synthetic: 500 and 5,000 images, 80 classes, 100 detections per image, ~95
bytes per detection; gn_det.benchmark.eval_speed makes them); only their ratios matter.
"""
import os
from typing import List, Sequence, Tuple

# seconds per MB of results JSON (per MB of ground truth for the ground-truth steps)
_PER_MB = {
    "load_gt": 0.05, "check_gt": 0.05,
    "load_dt": 0.05, "check_dt": 0.02,
    "cocoeval:faster": 0.18, "cocoeval:pycocotools": 1.2,
    "matching": 0.04, "pr": 0.035, "write": 0.003,
}
# plots: a fixed part (matplotlib's import and the figures' frames), per class, and per MB of
# results (the curves are drawn through every distinct score)
_PLOT_FIXED, _PLOT_PER_CLASS, _PLOT_PER_MB = 1.6, 0.022, 0.023
_MIN_STEP = 0.02


def _mb(path: str) -> float:
    try:
        return os.path.getsize(path) / 1e6
    except OSError:
        return 0.0


def evaluation_steps(gt_path: str, dt_paths: Sequence[str], names: Sequence[str], engine: str,
                     plot: bool, num_classes_guess: int = 80) -> List[Tuple[str, float]]:
    """(step name, expected seconds at the reference speed) for every step, in order."""
    gt_mb = _mb(gt_path)
    steps = [(f"loading {os.path.basename(gt_path)}", _PER_MB["load_gt"] * gt_mb),
             ("validating the ground truth", _PER_MB["check_gt"] * gt_mb)]
    total_mb = 0.0
    for name, path in zip(names, dt_paths):
        mb = _mb(path)
        total_mb += mb
        steps += [(f"loading {name}", _PER_MB["load_dt"] * mb),
                  (f"validating {name}", _PER_MB["check_dt"] * mb),
                  (f"{name}: COCOeval", _PER_MB[f"cocoeval:{engine}"] * mb),
                  (f"{name}: matching", _PER_MB["matching"] * mb),
                  (f"{name}: P/R", _PER_MB["pr"] * mb)]
    steps.append(("writing", _PER_MB["write"] * total_mb * 2))
    if plot:
        steps.append(("plots", len(dt_paths) * (_PLOT_FIXED + _PLOT_PER_CLASS * num_classes_guess)
                      + _PLOT_PER_MB * total_mb))
    return [(n, max(s, _MIN_STEP)) for n, s in steps]
