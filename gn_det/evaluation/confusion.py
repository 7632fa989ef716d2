"""Confusion matrix at one operating point (IoU, score threshold), from COCOeval's own matches.

Rows are the ground-truth classes, then "background"; columns are the predicted classes, then
"background". Over the detections that P/R count (the top maxDets per image and class, kept when
score >= the threshold):

    [c, c]    the TP of class c: COCOeval's matches (Matches.tp), i.e. metrics.json's TP
    [g, p]    g != p: a detection of class p that COCOeval left unmatched (an FP of p), paired with
              a GT of class g that no detection of class g matched (an FN of g): wrong class
    [bg, p]   the other FPs of class p (no leftover GT to pair with: background, duplicates,
              poor localizations of its own class)
    [g, bg]   the other FNs of class g: missed, no detection of any class on them
    [bg, bg]  always 0

So row c sums to class c's GT count (TP + FN) and column c to its kept detections (TP + FP): P and
R at the operating point can be read off the matrix. Detections absorbed by a crowd region are
neither TP nor FP in P/R and are not counted; crowd regions are not GT.

The one step beyond COCOeval's matching: per-class COCOeval (useCats=1) never compares a detection
with a GT of another class, so a wrong-class pair needs IoUs it did not compute. They come from
pycocotools' own `maskUtils.iou` on the same boxes (what COCOeval.computeIoU calls), over the
leftovers only: per image, the FPs by descending score each take the leftover GT of another class
with the highest IoU >= the threshold, one detection per GT (evaluateImg's rule). This only says
which FP sits on which FN; TP, FP and FN stay COCOeval's.
"""
import csv
import io
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from ..utils.file_io import atomic_write
from .matching import Matches

BACKGROUND = "background"


@dataclass(frozen=True)
class Outcomes:
    """Each detection and GT of a `Matches` at one (IoU, score): what P/R count, plus the
    cross-class pairing. Detection positions index the Matches arrays, GT positions its gt_*."""

    iou: float
    score: float
    kept: np.ndarray       # [N] bool: score >= threshold and not absorbed by a crowd region
    tp: np.ndarray         # [N] bool: kept and matched a GT of its class
    paired_gt: np.ndarray  # [N] int: GT the detection is on: its match (TP) or, for an FP, the
    #                        other-class GT it is paired with; -1 none
    gt_hit: np.ndarray     # [G] int: detection that matched (TP) or was paired with each GT; -1
    #                        none (always for crowd GT)

    @property
    def fp(self) -> np.ndarray:
        return self.kept & ~self.tp


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts at (iou, score): matrix[row = GT class or background, column = predicted class or
    background]; `labels` names both axes (class names, then "background")."""

    iou: float
    score: float
    labels: Tuple[str, ...]
    matrix: np.ndarray  # [K + 1, K + 1] int

    def to_dict(self) -> Dict:
        """The metrics.json entry."""
        return {"iou": self.iou, "score": self.score, "rows": "ground truth",
                "columns": "predicted", "labels": list(self.labels),
                "matrix": self.matrix.tolist()}


def outcomes_at(cocoeval: COCOeval, matches: Matches, iou: float, score: float) -> Outcomes:
    """COCOeval's outcome of every detection and GT at (iou, score), plus the pairing of leftover
    FPs with leftover FNs of other classes (see the module docstring)."""
    t = matches.iou_index(iou)
    above = matches.scores >= score
    tp = matches.tp[t] & above
    fp = matches.fp[t] & above
    paired_gt = np.where(tp, matches.gt_match[t], -1)
    gt_hit = np.full(len(matches.gt_ids), -1, dtype=np.int64)
    gt_hit[paired_gt[tp]] = np.flatnonzero(tp)
    missed = np.flatnonzero(~matches.gt_ignore & (gt_hit < 0))
    for d, g in cross_class_pairs(cocoeval, matches, np.flatnonzero(fp), missed, iou):
        paired_gt[d], gt_hit[g] = g, d
    return Outcomes(float(iou), float(score), tp | fp, tp, paired_gt, gt_hit)


def cross_class_pairs(cocoeval: COCOeval, matches: Matches, dets: np.ndarray, gts: np.ndarray,
                      iou: float) -> List[Tuple[int, int]]:
    """(detection, GT) position pairs: per image, `dets` (positions, in descending score order)
    each take the not yet taken GT among `gts` of another class with the highest IoU >= `iou`."""
    thr = min(iou, 1 - 1e-10)  # as COCOeval.evaluateImg
    pairs = []
    gts_by_image: Dict[int, List[int]] = {}
    for g in gts.tolist():
        gts_by_image.setdefault(int(matches.gt_image_ids[g]), []).append(g)
    dets_by_image: Dict[int, List[int]] = {}
    for d in dets.tolist():
        if int(matches.image_ids[d]) in gts_by_image:
            dets_by_image.setdefault(int(matches.image_ids[d]), []).append(d)
    for image_id, ds in dets_by_image.items():
        gs = np.asarray(gts_by_image[image_id])
        ious = pair_ious(cocoeval, matches.det_ids[ds], matches.gt_ids[gs])
        ious[matches.labels[ds][:, None] == matches.gt_labels[gs][None, :]] = -1.0
        taken = np.zeros(len(gs), dtype=bool)
        for i, d in enumerate(ds):
            row = np.where(taken, -1.0, ious[i])
            j = int(np.argmax(row))
            if row[j] >= thr:
                taken[j] = True
                pairs.append((d, int(gs[j])))
    return pairs


def pair_ious(cocoeval: COCOeval, det_ids: Sequence[int], gt_ids: Sequence[int]) -> np.ndarray:
    """[D, G] IoU of results-COCO detections with (non-crowd) GT annotations, by id, computed as
    COCOeval.computeIoU does (pycocotools' maskUtils.iou on boxes, or on masks for "segm")."""
    key = {"bbox": "bbox", "segm": "segmentation"}.get(cocoeval.params.iouType)
    if key is None:
        raise ValueError(f"IoU type {cocoeval.params.iouType!r} has no pairwise IoU here; "
                         "expected 'bbox' or 'segm'")
    if not len(det_ids) or not len(gt_ids):
        return np.zeros((len(det_ids), len(gt_ids)))
    d = [cocoeval.cocoDt.anns[int(i)][key] for i in det_ids]
    g = [cocoeval.cocoGt.anns[int(i)][key] for i in gt_ids]
    return np.asarray(mask_utils.iou(d, g, [0] * len(g)), dtype=np.float64).reshape(len(d), len(g))


def confusion_matrix(matches: Matches, outcomes: Outcomes,
                     class_names: Sequence[str]) -> ConfusionMatrix:
    """The matrix of `outcomes` (see the module docstring for each cell)."""
    k = len(class_names)
    matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
    kept = np.flatnonzero(outcomes.kept)
    on_gt = outcomes.paired_gt[kept]
    rows = np.full(len(kept), k, dtype=np.int64)
    rows[on_gt >= 0] = matches.gt_labels[on_gt[on_gt >= 0]]
    np.add.at(matrix, (rows, matches.labels[kept]), 1)
    missed = ~matches.gt_ignore & (outcomes.gt_hit < 0)
    np.add.at(matrix, (matches.gt_labels[missed], k), 1)
    return ConfusionMatrix(outcomes.iou, outcomes.score, tuple(class_names) + (BACKGROUND,),
                           matrix)


def write_confusion_csv(cm: ConfusionMatrix, path: str) -> str:
    """confusion_matrix.csv: one row per GT class (then background), one column per predicted
    class (then background); the corner cell says which axis is which."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([f"ground truth \\ predicted (IoU {cm.iou:g}, score >= {cm.score:g})",
                     *cm.labels])
    for label, row in zip(cm.labels, cm.matrix.tolist()):
        writer.writerow([label, *row])
    atomic_write(path, lambda f: f.write(text.getvalue().encode("utf-8")))
    return path
