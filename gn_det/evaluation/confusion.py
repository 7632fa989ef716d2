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
the same-image overlaps of gn_det.evaluation.overlaps (COCO's box IoU, to the bit), over the
leftovers only: per image, the FPs by descending score each take the leftover GT of another class
with the highest IoU >= the threshold, one detection per GT (evaluateImg's rule). This only says
which FP sits on which FN; TP, FP and FN stay COCOeval's.
"""
import csv
import io
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

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


def outcomes_at(matches: Matches, iou: float, score: float) -> Outcomes:
    """COCOeval's outcome of every detection and GT at (iou, score), plus the pairing of leftover
    FPs with leftover FNs of other classes (see the module docstring). `matches` needs its
    overlaps (gn_det.evaluation.greedy, or matching.with_boxes)."""
    t = matches.iou_index(iou)
    above = matches.scores >= score
    tp = matches.tp[t] & above
    fp = matches.fp[t] & above
    paired_gt = np.where(tp, matches.gt_match[t], -1)
    gt_hit = np.full(len(matches.gt_ids), -1, dtype=np.int64)
    gt_hit[paired_gt[tp]] = np.flatnonzero(tp)
    missed = ~matches.gt_ignore & (gt_hit < 0)
    for d, g in cross_class_pairs(matches, fp, missed, iou):
        paired_gt[d], gt_hit[g] = g, d
    return Outcomes(float(iou), float(score), tp | fp, tp, paired_gt, gt_hit)


def cross_class_pairs(matches: Matches, dets: np.ndarray, gts: np.ndarray,
                      iou: float) -> List[Tuple[int, int]]:
    """(detection, GT) position pairs: per image, the detections where `dets` [N] bool is set
    (in descending score order) each take the not yet taken GT where `gts` [G] bool is set, of
    another class, with the highest IoU >= `iou`."""
    if matches.overlaps is None:
        raise ValueError("these matches carry no overlaps; make them with "
                         "gn_det.evaluation.greedy.match_detections or matching.with_boxes")
    thr = min(iou, 1 - 1e-10)  # as COCOeval.evaluateImg
    ov = matches.overlaps
    e = (dets[ov.det] & gts[ov.gt] & (ov.iou >= thr)
         & (matches.labels[ov.det] != matches.gt_labels[ov.gt]))
    d, g, v = ov.det[e], ov.gt[e], ov.iou[e]
    pairs = []
    taken = set()
    # detections in Matches order (descending score); per detection its candidates by IoU, ties:
    # the first GT position (np.argmax's choice)
    order = np.lexsort((g, -v, d))
    d, g = d[order].tolist(), g[order].tolist()
    current = -1
    for di, gi in zip(d, g):
        if di == current or gi in taken:
            continue
        taken.add(gi)
        pairs.append((di, gi))
        current = di
    return pairs


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
