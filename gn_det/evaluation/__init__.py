"""Detection evaluation: the 12 COCO stats plus precision / recall / F1 at operating thresholds,
best-F1 thresholds and PR curves, from one COCO-rule matching pass.

`PREvaluator` is the detectron2 DatasetEvaluator; `tools/evaluate.py` runs the same on any
detector's COCO results file.
"""
from .coco_stats import STAT_NAMES, coco_stats, per_class_ap, run_cocoeval
from .matching import Curve, Matches, best_f1, counts_at, curve, match_from_cocoeval, ratios
from .metrics import (DEFAULT_IOU_THRESHOLDS, DEFAULT_SCORE_THRESHOLDS, Evaluation,
                      evaluate_detections)
from .plots import plot_pr_curves
from .pr_evaluator import PREvaluator, build_pr_evaluator
from .report import (format_coco_table, format_comparison_table, format_pr_table,
                     write_comparison_csv, write_metrics_csv, write_metrics_json)
from .results import (EvaluationInputError, GroundTruthError, ResultsError, category_names,
                      load_ground_truth, load_results, results_to_coco)
