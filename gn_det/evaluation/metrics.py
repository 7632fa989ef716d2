"""One evaluation of detections against COCO ground truth: the 12 COCO stats, per-class AP,
precision / recall / F1 / TP / FP / FN at operating thresholds, the best-F1 threshold per class,
the confusion matrix at the main (IoU, score) (gn_det.evaluation.confusion), the TIDE error
breakdown (gn_det.evaluation.tide) and per-class deploy thresholds
(gn_det.evaluation.thresholds).

All values are fractions in [0, 1] (None where COCO leaves a stat undefined). "overall" pools the
classes (micro average: summed TP, FP, FN), which is what a deployment at one threshold sees.
"""
import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .coco_stats import coco_stats, per_class_ap, run_cocoeval
from .confusion import ConfusionMatrix, Outcomes, confusion_matrix, outcomes_at
from .engine import engine_of
from .greedy import match_detections
from .matching import Matches, best_f1, counts_at, match_from_cocoeval, ratios, with_boxes
from .results import category_names, results_to_coco
from .thresholds import choose_thresholds
from .tide import tide

logger = logging.getLogger(__name__)

DEFAULT_IOU_THRESHOLDS = (0.5, 0.75)
DEFAULT_SCORE_THRESHOLDS = (0.05, 0.3, 0.5, 0.7)
# the steps evaluate_detections reports through `phase` (tools/evaluate.py names them)
STEPS = ("COCOeval", "matching", "P/R")


def threshold_key(value: float) -> str:
    """JSON key of a threshold: 0.5 -> "0.5", 0.05 -> "0.05"."""
    return f"{value:g}"


@dataclass
class Evaluation:
    """What one evaluation produced: the metrics dict (metrics.json) and what plots need."""

    metrics: Dict
    matches: Matches
    class_names: List[str]        # by class index, as matches.labels
    cocoeval: object              # the engine's COCOeval, evaluated
    main_iou: float
    main_score: float
    score_thresholds: Sequence[float]
    outcomes: Optional[Outcomes] = None          # every detection / GT at the main thresholds
    confusion: Optional[ConfusionMatrix] = None  # the confusion matrix there
    thresholds: Optional[Dict] = None            # thresholds.json content
    coco_gt: object = None                       # the ground truth COCO
    image_ids: List = field(default_factory=list)  # the evaluated images, in COCOeval's order


def check_thresholds(iou_thresholds: Sequence[float], score_thresholds: Sequence[float],
                     main_score: Optional[float] = None) -> None:
    """Raise ValueError naming the bad threshold."""
    if not len(iou_thresholds):
        raise ValueError("at least one IoU threshold is needed")
    for t in iou_thresholds:
        if not 0.0 < float(t) <= 1.0:
            raise ValueError(f"IoU threshold {t} is outside (0, 1]")
    if not len(score_thresholds):
        raise ValueError("at least one score threshold is needed")
    for s in list(score_thresholds) + ([main_score] if main_score is not None else []):
        if not np.isfinite(float(s)):
            raise ValueError(f"score threshold {s} is not a finite number")


def evaluate_detections(coco_gt, detections: List[Dict],
                        iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
                        score_thresholds: Sequence[float] = DEFAULT_SCORE_THRESHOLDS,
                        main_score: float = 0.5, img_ids=None, progress: bool = False,
                        target_precision: Optional[float] = None,
                        phase: Optional[Callable[[str], object]] = None) -> Evaluation:
    """Evaluate validated detections (gn_det.evaluation.results.load_results) on `coco_gt`, with
    the engine `coco_gt` was loaded for (gn_det.evaluation.engine).

    The first IoU threshold is the main one (best-F1, PR curves, confusion matrix, TIDE,
    thresholds); `main_score` is added to the score thresholds when absent. Score thresholds are
    reported in ascending order. `progress` logs COCOeval's progress with an ETA;
    `phase(what)` is called as each of STEPS ends. Deploy thresholds: best F1 per class, or the
    lowest score reaching `target_precision`.
    """
    check_thresholds(iou_thresholds, score_thresholds, main_score)
    ious = list(dict.fromkeys(float(t) for t in iou_thresholds))
    scores = sorted({float(s) for s in score_thresholds} | {float(main_score)})
    done = phase or (lambda what: None)
    engine = engine_of(coco_gt)
    cocoeval = run_cocoeval(coco_gt, results_to_coco(coco_gt, detections), "bbox", img_ids,
                            progress=progress)
    done(f"{engine}: IoUs, matching, accumulating, the 12 stats")
    if engine == "pycocotools":
        matches = with_boxes(match_from_cocoeval(cocoeval, ious), coco_gt, detections)
    else:
        matches = match_detections(coco_gt, detections, ious, cocoeval.params.imgIds,
                                   int(cocoeval.params.maxDets[-1]))
    done(f"at IoU {', '.join(threshold_key(t) for t in ious)}")
    names_by_id = category_names(coco_gt)
    names = [names_by_id[c] for c in matches.category_ids]

    tp, fp, fn = counts_at(matches, scores)
    pr = {}
    for t, iou in enumerate(ious):
        pr[threshold_key(iou)] = {
            threshold_key(s): {
                "overall": _pr_entry(tp[t, j].sum(), fp[t, j].sum(), fn[t, j].sum()),
                "per_class": {n: _pr_entry(tp[t, j, k], fp[t, j, k], fn[t, j, k])
                              for k, n in enumerate(names)},
            } for j, s in enumerate(scores)}
    ap = per_class_ap(cocoeval)
    outcomes = outcomes_at(matches, ious[0], float(main_score))
    confusion = confusion_matrix(matches, outcomes, names)
    thresholds = choose_thresholds(matches, ious[0], names, target_precision)
    metrics = {
        "coco": coco_stats(cocoeval),
        "ap_per_class": {n: ap.get(c) for n, c in zip(names, matches.category_ids)},
        "pr": pr,
        "best_f1": {n: best_f1(matches, ious[0], k) for k, n in enumerate(names)},
        "best_f1_overall": best_f1(matches, ious[0]),
        "settings": {
            "iou_thresholds": ious, "score_thresholds": scores, "main_iou": ious[0],
            "main_score": float(main_score), "max_dets": matches.max_dets,
            "kept": "score >= threshold", "overall": "micro (summed over classes)",
            "num_images": len(cocoeval.params.imgIds), "engine": engine,
            "num_detections": len(detections), "num_evaluated_detections": int(len(matches.scores)),
            "num_gt": {n: int(g) for n, g in zip(names, matches.num_gt)},
        },
        "confusion": confusion.to_dict(),
        "tide": tide(matches, ious[0], float(main_score)),
        "thresholds": {k: thresholds[k] for k in ("rule", "target_precision", "iou", "kept",
                                                  "null_threshold", "classes")},
    }
    done("best F1, confusion matrix, TIDE errors, thresholds")
    return Evaluation(metrics, matches, names, cocoeval, ious[0], float(main_score), scores,
                      outcomes, confusion, thresholds, coco_gt, list(cocoeval.params.imgIds))


def _pr_entry(tp, fp, fn) -> Dict:
    p, r, f1 = (float(x) for x in ratios(tp, fp, fn))
    return {"precision": p, "recall": r, "f1": f1, "tp": int(tp), "fp": int(fp), "fn": int(fn)}

