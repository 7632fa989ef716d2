"""PREvaluator: detectron2's COCOEvaluator plus precision / recall / F1 at operating thresholds.

It keeps COCOEvaluator's dataset handling (json_file or conversion to COCO), per-image conversion
of Instances to COCO json and gathering across ranks, and replaces the scoring step: the 12 COCO
bbox stats and per-class AP, then P/R/F1/TP/FP/FN at each (IoU, score) threshold and the best-F1
threshold per class from the same matches, the confusion matrix, the TIDE error breakdown and
per-class deploy thresholds. COCOeval runs on `engine` (faster-coco-eval by default,
pycocotools as the reference; cfg.TEST.PR.ENGINE). It writes metrics.json, metrics.csv,
thresholds.json, confusion_matrix.csv and (with `plot`) pr_curves.png, confusion_matrix.png,
p_curve.png, r_curve.png, f1_curve.png and tide_errors.png to output_dir, and logs the class ×
P/R/F1 table, the confusion matrix (or its top confusions) and the TIDE table.

The returned dict holds floats only (detectron2's EvalHook logs every leaf as a scalar), scaled
0-100 like COCOEvaluator's:
  "bbox": AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl, "AP-<class>";
  "pr":   "P50@0.5" = precision at IoU 0.5, score >= 0.5 (R = recall, F = F1) for every
          threshold pair, "bestF50" / "bestF50_score" (best overall F1 and its score, 0-1), and
          "P50@0.5-<class>" etc. per class at the main thresholds;
  "segm": the 12 stats and per-class AP when the model predicts masks.
The complete metrics (fractions) are in `evaluator.metrics` and metrics.json.
"""
import itertools
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from detectron2.evaluation import COCOEvaluator

from ..utils.file_io import write_json
from .coco_stats import STAT_NAMES, coco_stats, per_class_ap, run_cocoeval
from .engine import DEFAULT_ENGINE, check_engine
from .metrics import (DEFAULT_IOU_THRESHOLDS, DEFAULT_SCORE_THRESHOLDS, Evaluation,
                      check_thresholds, evaluate_detections, threshold_key)
from .plots import plot_pr_curves
from .report import (format_coco_table, format_confusion_table, format_pr_table,
                     format_tide_table, write_error_analysis, write_metrics_csv,
                     write_metrics_json)
from .results import ResultsError, category_names, load_ground_truth, load_results, results_to_coco
from .thresholds import write_thresholds

logger = logging.getLogger(__name__)


class PREvaluator(COCOEvaluator):
    """COCO AP/AR plus P/R/F1 at score × IoU thresholds, for detectron2's inference_on_dataset."""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, *,
                 distributed: bool = True,
                 iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
                 score_thresholds: Sequence[float] = DEFAULT_SCORE_THRESHOLDS,
                 main_score: float = 0.5, plot: bool = True, engine: str = DEFAULT_ENGINE,
                 target_precision: Optional[float] = None):
        """
        Args:
            dataset_name: a registered dataset with a COCO `json_file` in its metadata, or in
                detectron2's format (converted to COCO json in output_dir, as COCOEvaluator does).
            iou_thresholds: P/R are computed at each; the first is the main one (best F1, plots).
            score_thresholds: operating points; a detection counts when its score >= threshold.
            main_score: the score of the logged table (added to score_thresholds if absent).
            plot: write the PNGs (PR curves, confusion matrix, P/R/F1 against score, TIDE).
            engine: the COCOeval engine, "faster" (faster-coco-eval) or "pycocotools".
            target_precision: thresholds.json's rule: per class the lowest score reaching this
                precision; None: the best-F1 score.
        """
        check_thresholds(iou_thresholds, score_thresholds, main_score)
        self._engine = check_engine(engine)
        self._target_precision = target_precision
        super().__init__(dataset_name, tasks=None, distributed=distributed, output_dir=output_dir,
                         use_fast_impl=False)
        self._iou_thresholds = [float(t) for t in iou_thresholds]
        self._score_thresholds = [float(s) for s in score_thresholds]
        self._main_score = float(main_score)
        self._plot = plot
        self.metrics: Optional[Dict] = None
        if self._do_evaluation:  # validates and fills what pycocotools needs (area, iscrowd)
            self._coco_api = load_ground_truth(self._coco_api.dataset, self._engine)

    def _eval_predictions(self, predictions, img_ids=None):
        """Score gathered predictions into self._results (called by COCOEvaluator.evaluate)."""
        coco_results = list(itertools.chain(*[p["instances"] for p in predictions]))
        self._unmap_category_ids(coco_results)
        if self._output_dir:
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            write_json(path, coco_results)
        if not self._do_evaluation:
            logger.info("Annotations are not available for evaluation.")
            return
        detections = load_results(coco_results, self._coco_api, name="model predictions")
        ev = evaluate_detections(self._coco_api, detections, self._iou_thresholds,
                                 self._score_thresholds, self._main_score, img_ids,
                                 progress=True, target_precision=self._target_precision)
        self.metrics = ev.metrics
        self._results["bbox"] = _detectron2_coco(ev.metrics["coco"], ev.metrics["ap_per_class"])
        self._results["pr"] = _detectron2_pr(ev)
        gt_has_masks = any("segmentation" in a for a in self._coco_api.dataset["annotations"])
        if gt_has_masks and any("segmentation" in r for r in coco_results):
            self._eval_segm(detections, img_ids)
        logger.info("Evaluation results for bbox:\n" + format_coco_table({"bbox": ev.metrics}))
        logger.info("\n" + format_pr_table(ev.metrics))
        logger.info("\n" + format_confusion_table(ev))
        logger.info("\n" + format_tide_table(ev.metrics))
        if self._output_dir:
            self._write(ev)

    def _unmap_category_ids(self, coco_results: List[Dict]):
        """Contiguous class index → dataset category id, as COCOEvaluator does."""
        mapping = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if not mapping:
            return
        reverse = {v: k for k, v in mapping.items()}
        for i, r in enumerate(coco_results):
            if r["category_id"] not in reverse:
                raise ResultsError("model predictions", f"class index {r['category_id']} is not a "
                                   f"class of the dataset (valid: 0..{len(reverse) - 1})",
                                   i, "pred_classes")
            r["category_id"] = reverse[r["category_id"]]

    def _eval_segm(self, detections: List[Dict], img_ids):
        masked = [d for d in detections if "segmentation" in d]
        cocoeval = run_cocoeval(self._coco_api, results_to_coco(self._coco_api, masked, "segm"),
                                "segm", img_ids)
        names = category_names(self._coco_api)
        per_class = {names[c]: ap for c, ap in per_class_ap(cocoeval).items()}
        stats = coco_stats(cocoeval)
        self._results["segm"] = _detectron2_coco(stats, per_class)
        self.metrics["coco_segm"] = stats
        self.metrics["ap_per_class_segm"] = per_class

    def _write(self, ev: Evaluation):
        os.makedirs(self._output_dir, exist_ok=True)
        write_metrics_json(self.metrics, os.path.join(self._output_dir, "metrics.json"))
        write_metrics_csv(self.metrics, os.path.join(self._output_dir, "metrics.csv"))
        write_thresholds(ev.thresholds, os.path.join(self._output_dir, "thresholds.json"))
        written = ["metrics.json", "metrics.csv", "thresholds.json"]
        if self._plot:
            written.append(os.path.basename(plot_pr_curves(
                {self._metadata.name: ev}, os.path.join(self._output_dir, "pr_curves.png"))))
        written += [os.path.basename(p)
                    for p in write_error_analysis(ev, self._output_dir, plot=self._plot)]
        logger.info("Wrote %s to %s", ", ".join(written), self._output_dir)


def _pct(v: Optional[float]) -> float:
    return float("nan") if v is None else 100.0 * v


def _detectron2_coco(stats: Dict, per_class: Dict) -> Dict[str, float]:
    """The 12 stats and "AP-<class>", 0-100 with NaN where undefined, like COCOEvaluator."""
    out = {name: _pct(stats[name]) for name in STAT_NAMES}
    if len(per_class) > 1:
        out.update({f"AP-{n}": _pct(v) for n, v in per_class.items()})
    return out


def _detectron2_pr(ev: Evaluation) -> Dict[str, float]:
    """P/R/F1 in 0-100: overall at every threshold pair, per class at the main pair."""
    out = OrderedDict()
    for iou, by_score in ev.metrics["pr"].items():
        tag = f"{round(float(iou) * 100)}"
        for score, at in by_score.items():
            for letter, key in (("P", "precision"), ("R", "recall"), ("F", "f1")):
                out[f"{letter}{tag}@{score}"] = _pct(at["overall"][key])
    main_tag = f"{round(ev.main_iou * 100)}"
    best = ev.metrics["best_f1_overall"]
    out[f"bestF{main_tag}"] = _pct(best["f1"])
    out[f"bestF{main_tag}_score"] = float("nan") if best["score"] is None else best["score"]
    at = ev.metrics["pr"][threshold_key(ev.main_iou)][threshold_key(ev.main_score)]
    for n, v in at["per_class"].items():
        for letter, key in (("P", "precision"), ("R", "recall"), ("F", "f1")):
            out[f"{letter}{main_tag}@{threshold_key(ev.main_score)}-{n}"] = _pct(v[key])
    return dict(out)


def build_pr_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> PREvaluator:
    """The evaluator the trainer uses, with thresholds from cfg.TEST.PR (gn_det.config)."""
    pr = cfg.TEST.PR
    target = pr.get("TARGET_PRECISION", 0.0)
    return PREvaluator(dataset_name, output_dir=output_dir,
                       iou_thresholds=list(pr.IOU_THRESHOLDS),
                       score_thresholds=list(pr.SCORE_THRESHOLDS), main_score=pr.MAIN_SCORE,
                       engine=pr.get("ENGINE", DEFAULT_ENGINE),
                       target_precision=float(target) if target else None)
