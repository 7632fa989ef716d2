"""Detection evaluation: the 12 COCO stats plus precision / recall / F1 at operating thresholds,
best-F1 thresholds, PR curves, P/R/F1 against score and the confusion matrix, from one COCO-rule
matching pass; per-image error kinds for the error viewer (errors.py).

`PREvaluator` is the detectron2 DatasetEvaluator; `tools/evaluate.py` runs the same on any
detector's COCO results file.
"""
from .coco_stats import STAT_NAMES, coco_stats, per_class_ap, run_cocoeval
from .confusion import (BACKGROUND, ConfusionMatrix, Outcomes, confusion_matrix, outcomes_at,
                        write_confusion_csv)
from .curves import ScoreCurve, score_curves
from .matching import Curve, Matches, best_f1, counts_at, curve, match_from_cocoeval, ratios
from .metrics import (DEFAULT_IOU_THRESHOLDS, DEFAULT_SCORE_THRESHOLDS, Evaluation,
                      evaluate_detections)
from .plots import plot_confusion_matrix, plot_pr_curves, plot_score_curves
from .pr_evaluator import PREvaluator, build_pr_evaluator
from .report import (format_coco_table, format_comparison_table, format_confusion_table,
                     format_pr_table, write_comparison_csv, write_error_analysis,
                     write_metrics_csv, write_metrics_json)
from .results import (EvaluationInputError, GroundTruthError, ResultsError, category_names,
                      load_ground_truth, load_results, results_to_coco)
