"""The 12 COCO summary stats (AP, AP50, ..., ARl) and per-class AP from COCOeval, run by either
engine (gn_det.evaluation.engine: faster-coco-eval by default, pycocotools as the reference).
"""
import logging
import time
from typing import Callable, Dict, Optional

import numpy as np

from ..utils.progress import Progress
from .engine import engine_of, evaluate_and_accumulate, new_cocoeval

logger = logging.getLogger(__name__)

# In COCOeval.stats order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def run_cocoeval(coco_gt, coco_dt, iou_type: str = "bbox", img_ids=None,
                 progress: bool = False):
    """The engine's COCOeval with evaluate(), accumulate() and summarize() done (default params:
    maxDets 1/10/100, IoU .50:.05:.95); the engines' printing is silenced. With `progress`, logs
    each step; for pycocotools, whose Python loops take a minute at COCO size, also how far its
    per-(image, class) IoU and matching passes are, with an ETA, every 5 s."""
    cocoeval = new_cocoeval(coco_gt, coco_dt, iou_type, img_ids)
    engine = engine_of(coco_gt)
    start = time.perf_counter()
    wrapped = []
    if progress and engine == "pycocotools":
        p = cocoeval.params
        pairs = len(set(p.imgIds)) * len(set(p.catIds))
        for name, total, what in (("computeIoU", pairs, "IoUs"),
                                  ("evaluateImg", pairs * len(p.areaRng), "matching")):
            counter = Progress(total, f"COCOeval (pycocotools): {what}", "image-class pairs",
                               log=logger.info, bar=False, every=5.0)
            setattr(cocoeval, name, _Counted(getattr(cocoeval, name), counter))
            wrapped.append(name)

    def note(step: str) -> None:
        if not progress:
            return
        if engine == "faster":
            what = {"indexed": f"{len(coco_gt.anns)} ground-truth boxes and {len(coco_dt.anns)} "
                               "detections indexed",
                    "IoUs": "IoUs computed; matching and accumulating in C++, by class"
                    }.get(step, step)
        else:
            what = {"evaluate": "IoUs and matching", "accumulate": "accumulating"}[step]
        logger.info("COCOeval (%s): %s (%.1fs so far)", engine, what,
                    time.perf_counter() - start)

    evaluate_and_accumulate(cocoeval, note)
    for name in wrapped:
        delattr(cocoeval, name)
    if progress:
        logger.info("COCOeval (%s): done in %.1fs", engine, time.perf_counter() - start)
    return cocoeval


class _Counted:
    """Wraps a per-(image, class) COCOeval method to count its calls in a Progress."""

    def __init__(self, fn: Callable, counter: Progress):
        self.fn, self.counter = fn, counter

    def __call__(self, *args):
        self.counter.update()
        return self.fn(*args)


def coco_stats(cocoeval) -> Dict[str, Optional[float]]:
    """Name → fraction in [0, 1]; None where COCO leaves it undefined (pycocotools' -1: no ground
    truth in that area range)."""
    return {name: (float(v) if v >= 0 else None) for name, v in zip(STAT_NAMES, cocoeval.stats)}


def per_class_ap(cocoeval) -> Dict[int, Optional[float]]:
    """Category id → AP (IoU .50:.95, all areas, 100 dets), as detectron2's COCOEvaluator derives
    it; None for a class without ground truth."""
    precision = cocoeval.eval["precision"]  # [IoU, recall, class, area, maxDets]
    out = {}
    for k, cat_id in enumerate(cocoeval.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[cat_id] = float(np.mean(p)) if p.size else None
    return out
