"""Detection evaluation: the 12 COCO stats plus precision / recall / F1 at operating thresholds,
best-F1 thresholds, PR curves, P/R/F1 against score, the confusion matrix, the TIDE error
breakdown and per-class deploy thresholds (thresholds.json), from one matching pass; per-image
error kinds for the error viewer (errors.py). COCOeval runs on faster-coco-eval or pycocotools
(engine.py).

Light to import: numpy and tabulate only. matplotlib loads with the plots (plots.py) and
detectron2 with `PREvaluator` / `build_pr_evaluator` (a detectron2 DatasetEvaluator), both on
first use of those names. `tools/evaluate.py` runs the same on any detector's COCO results file.
"""
from .coco_stats import STAT_NAMES, coco_stats, per_class_ap, run_cocoeval
from .confusion import (BACKGROUND, ConfusionMatrix, Outcomes, confusion_matrix, outcomes_at,
                        write_confusion_csv)
from .curves import ScoreCurve, score_curves
from .engine import DEFAULT_ENGINE, ENGINES, check_engine
from .matching import Curve, Matches, best_f1, counts_at, curve, match_from_cocoeval, ratios
from .metrics import (DEFAULT_IOU_THRESHOLDS, DEFAULT_SCORE_THRESHOLDS, Evaluation,
                      evaluate_detections)
from .report import (format_coco_table, format_comparison_table, format_confusion_table,
                     format_pr_table, format_tide_table, write_comparison_csv,
                     write_error_analysis, write_metrics_csv, write_metrics_json)
from .results import (EvaluationInputError, GroundTruthError, ResultsError, category_names,
                      load_ground_truth, load_results, results_to_coco)
from .thresholds import (Thresholds, ThresholdsError, apply_thresholds, read_thresholds,
                         write_thresholds)
from .tide import ERROR_TYPES

_LAZY = {
    "PREvaluator": ".pr_evaluator", "build_pr_evaluator": ".pr_evaluator",
    "plot_confusion_matrix": ".plots", "plot_pr_curves": ".plots",
    "plot_score_curves": ".plots", "plot_tide": ".plots",
}


def __getattr__(name: str):
    """The detectron2 evaluator and the plots, imported on first use (PEP 562)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
