"""Every overlapping (detection, ground truth) pair of the same image, any classes, with its box
IoU: what the greedy matcher (same class), the confusion matrix and the TIDE error types (other
classes) read, computed once.

The IoU is COCO's, to the bit: pycocotools' bbIou (and faster-coco-eval's copy of it) in the
same floating-point order, so a pair exactly at a threshold falls on the same side as in
COCOeval. For a crowd region it is the share of the detection inside it (intersection over the
detection's area). Pairs are made image by image in chunks, so memory stays proportional to the
pairs that overlap (IoU > 0), not to detections x ground truth.
"""
from dataclasses import dataclass

import numpy as np

_CHUNK_PAIRS = 2_000_000


@dataclass(frozen=True)
class Overlaps:
    """Pairs with IoU > 0, sorted by detection then GT position: det [P], gt [P] (positions in
    the arrays they were computed from) and iou [P]."""

    det: np.ndarray
    gt: np.ndarray
    iou: np.ndarray

    def __len__(self) -> int:
        return len(self.iou)

    def take(self, keep: np.ndarray) -> "Overlaps":
        return Overlaps(self.det[keep], self.gt[keep], self.iou[keep])


def box_iou_pairs(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of XYWH boxes dt[i] and gt[i] ([P, 4] each), elementwise, as pycocotools' bbIou:
    0 where they do not overlap; crowd[i]: intersection over the detection's area."""
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    hit = (w > 0) & (h > 0)
    inter = np.where(hit, w * h, 0.0)
    da = dt[:, 2] * dt[:, 3]
    union = np.where(crowd, da, da + gt[:, 2] * gt[:, 3] - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(hit, inter / np.where(hit, union, 1.0), 0.0)


def image_overlaps(det_boxes: np.ndarray, det_images: np.ndarray, gt_boxes: np.ndarray,
                   gt_images: np.ndarray, gt_crowd: np.ndarray) -> Overlaps:
    """All (detection, GT) pairs of the same image with IoU > 0. Image ids are integers (any
    values; both sides compared as given)."""
    n_det = len(det_boxes)
    empty = Overlaps(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if not n_det or not len(gt_boxes):
        return empty
    by_image = np.argsort(gt_images, kind="stable")
    sorted_images = gt_images[by_image]
    first = np.searchsorted(sorted_images, det_images, side="left")
    count = np.searchsorted(sorted_images, det_images, side="right") - first
    ends = np.cumsum(count)
    dets, gts, ious = [], [], []
    start = 0
    while start < n_det:
        # detections [start, stop) make at most _CHUNK_PAIRS pairs (at least one detection)
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _CHUNK_PAIRS, side="right")), start + 1)
        c = count[start:stop]
        d = np.repeat(np.arange(start, stop), c)
        offsets = np.arange(len(d)) - np.repeat(np.cumsum(c) - c, c)
        g = by_image[np.repeat(first[start:stop], c) + offsets]
        iou = box_iou_pairs(det_boxes[d], gt_boxes[g], gt_crowd[g])
        keep = iou > 0
        dets.append(d[keep])
        gts.append(g[keep])
        ious.append(iou[keep])
        start = stop
    d, g, iou = np.concatenate(dets), np.concatenate(gts), np.concatenate(ious)
    order = np.lexsort((g, d))
    return Overlaps(d[order], g[order], iou[order])


def best_per_det(overlaps: Overlaps, keep: np.ndarray, n_det: int):
    """(gt [N], iou [N]): for each detection, the pair among `keep` [P] bool with the highest IoU
    (ties: the first GT position, as np.argmax picks); -1 and 0.0 where it has none."""
    d, g, v = overlaps.det[keep], overlaps.gt[keep], overlaps.iou[keep]
    best_gt = np.full(n_det, -1, np.int64)
    best_iou = np.zeros(n_det)
    if len(d):
        order = np.lexsort((g, -v, d))
        d, g, v = d[order], g[order], v[order]
        first = np.r_[True, d[1:] != d[:-1]]
        best_gt[d[first]], best_iou[d[first]] = g[first], v[first]
    return best_gt, best_iou
