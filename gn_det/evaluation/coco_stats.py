"""The 12 COCO summary stats (AP, AP50, ..., ARl) and per-class AP from pycocotools' COCOeval.

pycocotools is the reference implementation and the only one that exposes its per-detection
matches (`COCOeval.evalImgs`), from which gn_det.evaluation.matching derives precision/recall at
any score threshold without a second matching pass. faster-coco-eval keeps those matches inside
C++, so using it would mean matching twice; it is therefore not used here.
"""
import contextlib
import io
import logging
import time
from typing import Callable, Dict, Optional

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

logger = logging.getLogger(__name__)

# In COCOeval.stats order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def run_cocoeval(coco_gt: COCO, coco_dt: COCO, iou_type: str = "bbox", img_ids=None,
                 progress: bool = False) -> COCOeval:
    """COCOeval with evaluate(), accumulate() and summarize() done (default params: maxDets
    1/10/100, IoU .50:.05:.95); pycocotools' printing is silenced. With `progress`, logs how far
    evaluate() is, with an ETA, every few seconds."""
    cocoeval = COCOeval(coco_gt, coco_dt, iou_type)
    if img_ids is not None:
        cocoeval.params.imgIds = list(img_ids)
    if progress:
        p = cocoeval.params
        n_pairs = len(set(p.imgIds)) * len(set(p.catIds))
        cocoeval.computeIoU = _ProgressCalls(cocoeval.computeIoU, n_pairs, "computing IoUs")
        cocoeval.evaluateImg = _ProgressCalls(cocoeval.evaluateImg, n_pairs * len(p.areaRng),
                                              "matching")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        cocoeval.evaluate()
        if progress:
            logger.info("COCOeval: accumulating (%.0fs so far)", time.perf_counter() - start)
        cocoeval.accumulate()
        cocoeval.summarize()
    if progress:
        del cocoeval.computeIoU, cocoeval.evaluateImg
        logger.info("COCOeval: done in %.1fs", time.perf_counter() - start)
    return cocoeval


class _ProgressCalls:
    """Wraps a per-(image, class) COCOeval method; logs the share done and an ETA every 5 s."""

    def __init__(self, fn: Callable, total: int, what: str, every_s: float = 5.0):
        self.fn, self.total, self.what, self.every_s = fn, max(total, 1), what, every_s
        self.calls, self.start = 0, time.perf_counter()
        self.next_log = self.start + every_s

    def __call__(self, *args):
        self.calls += 1
        now = time.perf_counter()
        if now >= self.next_log:
            self.next_log = now + self.every_s
            done = self.calls / self.total
            eta = (now - self.start) * (1 - done) / done
            logger.info("COCOeval: %s %3.0f%% (%d/%d image-class pairs), ETA %.0fs",
                        self.what, 100 * done, self.calls, self.total, eta)
        return self.fn(*args)


def coco_stats(cocoeval: COCOeval) -> Dict[str, Optional[float]]:
    """Name → fraction in [0, 1]; None where COCO leaves it undefined (pycocotools' -1: no ground
    truth in that area range)."""
    return {name: (float(v) if v >= 0 else None) for name, v in zip(STAT_NAMES, cocoeval.stats)}


def per_class_ap(cocoeval: COCOeval) -> Dict[int, Optional[float]]:
    """Category id → AP (IoU .50:.95, all areas, 100 dets), as detectron2's COCOEvaluator derives
    it; None for a class without ground truth."""
    precision = cocoeval.eval["precision"]  # [IoU, recall, class, area, maxDets]
    out = {}
    for k, cat_id in enumerate(cocoeval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[cat_id] = float(np.mean(p)) if p.size else None
    return out
