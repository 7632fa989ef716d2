"""COCO-rule detection matching, once, and precision/recall/F1 at any score threshold from it.

For the pycocotools engine, the matching is pycocotools' own: `COCOeval.evaluate()` already runs
evaluateImg's greedy pass (per image and class, detections by descending score, top maxDets, one
GT each, crowd GT absorbing matches) at every IoU in `params.iouThrs`, and stores it in
`evalImgs`. `match_from_cocoeval`
reads those results for area range "all" and the largest maxDets (100) instead of matching again;
an IoU threshold outside `iouThrs` reruns evaluateImg for that threshold only, on the IoU
matrices COCOeval already computed. (For faster-coco-eval, which keeps its matches in C++, the
same rule runs in gn_det.evaluation.greedy, giving identical Matches.)

Greedy matching by descending score means the detections above a score threshold are matched
exactly as if the lower ones had never existed, so one pass serves every score threshold: counts
at threshold s are prefix sums over the detections sorted by score. A detection is kept at
threshold s when its score >= s.
"""
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .overlaps import Overlaps, image_overlaps

_ALL_AREAS = [0 ** 2, 1e5 ** 2]


def _empty(*shape) -> np.ndarray:
    return field(default_factory=lambda: np.zeros(shape or (0,), np.int64))


@dataclass(frozen=True)
class Matches:
    """Every evaluated detection (top maxDets per image and class), sorted by descending score,
    with its COCO-rule outcome at each IoU threshold, and the ground truth it competes for:
    per class (num_gt) and, in the gt_* arrays, each annotation with its image."""

    iou_thresholds: Tuple[float, ...]
    category_ids: Tuple[int, ...]  # class index k -> COCO category id
    scores: np.ndarray             # [N] float, descending
    labels: np.ndarray             # [N] int, class index
    tp: np.ndarray                 # [T, N] bool: matched a regular GT
    fp: np.ndarray                 # [T, N] bool: unmatched and not ignored
    num_gt: np.ndarray             # [K] int: GT per class that count (not crowd / ignored)
    max_dets: int = 100
    # Where each detection and GT is, for analyses per image (confusion matrix, error viewer):
    image_ids: np.ndarray = _empty()      # [N] image id of each detection
    det_ids: np.ndarray = _empty()        # [N] its id in the results COCO (loadRes: entry + 1)
    gt_match: np.ndarray = _empty(0, 0)   # [T, N] position in the gt_* arrays of the GT it
    #                                       matched (regular or crowd), -1 when none
    gt_ids: np.ndarray = _empty()         # [G] every evaluated GT annotation's id
    gt_image_ids: np.ndarray = _empty()   # [G] its image id
    gt_labels: np.ndarray = _empty()      # [G] its class index
    gt_ignore: np.ndarray = _empty()      # [G] bool: crowd / ignored (never TP, never FN)
    # Boxes (XYWH) and every same-image overlap, for the analyses beyond P/R (confusion matrix,
    # TIDE error types, error viewer): gn_det.evaluation.overlaps; with_boxes adds them.
    boxes: Optional[np.ndarray] = None     # [N, 4]
    gt_boxes: Optional[np.ndarray] = None  # [G, 4]
    gt_crowd: Optional[np.ndarray] = None  # [G] bool: a crowd region (IoU over detection area)
    overlaps: Optional[Overlaps] = None    # pairs (det position, GT position, IoU > 0)

    @property
    def ignored(self) -> np.ndarray:
        """[T, N] bool: matched a crowd / ignored GT, so neither TP nor FP."""
        return ~(self.tp | self.fp)

    def iou_index(self, iou: float) -> int:
        hits = np.flatnonzero(np.isclose(self.iou_thresholds, iou, atol=1e-6))
        if not len(hits):
            raise KeyError(f"IoU {iou} was not matched; matched: {list(self.iou_thresholds)}")
        return int(hits[0])


def match_from_cocoeval(cocoeval, iou_thresholds: Sequence[float]) -> Matches:
    """Matches at `iou_thresholds` from a COCOeval on which evaluate() has run (bbox or segm)."""
    if not isinstance(cocoeval.evalImgs, list):
        raise ValueError("match_from_cocoeval reads pycocotools' COCOeval.evalImgs; for "
                         "faster-coco-eval use gn_det.evaluation.greedy.match_detections")
    p = cocoeval._paramsEval if getattr(cocoeval, "_paramsEval", None) else cocoeval.params
    if not p.useCats:
        raise ValueError("per-class matching needs COCOeval.params.useCats = 1")
    iou_thresholds = tuple(float(t) for t in iou_thresholds)
    cat_ids, img_ids = list(p.catIds), list(p.imgIds)
    n_img, n_area = len(img_ids), len(p.areaRng)
    areas = [list(map(float, a)) for a in p.areaRng]
    if _ALL_AREAS not in areas:
        raise ValueError(f"COCOeval.params.areaRng has no 'all' range {_ALL_AREAS}: {areas}")
    a_all = areas.index(_ALL_AREAS)

    # where each requested threshold's matches live: (0, index in iouThrs) or (1, index in extra)
    sources, extra = [], []
    for t in iou_thresholds:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"IoU threshold {t} is outside (0, 1]")
        hits = np.flatnonzero(np.isclose(p.iouThrs, t, atol=1e-6))
        if len(hits):
            sources.append((0, int(hits[0])))
        else:
            sources.append((1, len(extra)))
            extra.append(t)
    extra_imgs = _evaluate_extra(cocoeval, p, extra, a_all) if extra else None

    # gather the 'all'-area, largest-maxDets block of evalImgs: (class index, base, extra) entries
    entries = []
    for k in range(len(cat_ids)):
        start = k * n_area * n_img + a_all * n_img
        block = cocoeval.evalImgs[start:start + n_img]
        xblock = extra_imgs[k * n_img:(k + 1) * n_img] if extra_imgs is not None else block
        entries += [(k, e, x) for e, x in zip(block, xblock) if e is not None]
    n_t = len(iou_thresholds)
    if not entries:
        z = np.zeros((n_t, 0), dtype=bool)
        return Matches(iou_thresholds, tuple(cat_ids), np.zeros(0), np.zeros(0, np.int64), z, z,
                       np.zeros(len(cat_ids), np.int64), max_dets=int(p.maxDets[-1]),
                       gt_match=np.zeros((n_t, 0), np.int64), gt_ignore=np.zeros(0, bool))
    ks = np.array([k for k, _, _ in entries], dtype=np.int64)
    gt_ig = [e["gtIgnore"] for _, e, _ in entries]
    gt_ignore = np.concatenate(gt_ig).astype(bool)
    gt_labels = np.repeat(ks, [len(g) for g in gt_ig])
    num_gt = np.bincount(gt_labels, weights=~gt_ignore, minlength=len(cat_ids)).astype(np.int64)
    gt_ids = np.concatenate([e["gtIds"] for _, e, _ in entries]).astype(np.int64)
    gt_image_ids = np.repeat([e["image_id"] for _, e, _ in entries], [len(g) for g in gt_ig])
    n_dets = [len(e["dtScores"]) for _, e, _ in entries]
    scores = np.concatenate([e["dtScores"] for _, e, _ in entries]).astype(np.float64)
    labels = np.repeat(ks, n_dets)
    image_ids = np.repeat([e["image_id"] for _, e, _ in entries], n_dets)
    det_ids = np.concatenate([e["dtIds"] for _, e, _ in entries]).astype(np.int64)

    def rows(key: str) -> np.ndarray:
        """[T, N]: evalImgs' per-detection field `key` at each requested IoU threshold."""
        base = np.concatenate([e[key] for _, e, _ in entries], axis=1)
        more = np.concatenate([x[key] for _, _, x in entries], axis=1) if extra else None
        return np.stack([(base if s == 0 else more)[j] for s, j in sources])

    dtm, dtig = rows("dtMatches"), rows("dtIgnore").astype(bool)
    tp, fp = (dtm > 0) & ~dtig, (dtm == 0) & ~dtig
    # dtMatches holds the matched GT's annotation id (0: none): its position in gt_ids instead
    by_id = np.argsort(gt_ids, kind="mergesort")
    if np.any(np.diff(gt_ids[by_id]) == 0):
        raise ValueError("ground-truth annotation ids repeat, so COCOeval's matches are ambiguous; "
                         "load the annotations with gn_det.evaluation.load_ground_truth, which "
                         "renumbers them")
    at = np.searchsorted(gt_ids[by_id], dtm.astype(np.int64)).clip(0, max(len(gt_ids) - 1, 0))
    gt_match = np.where(dtm > 0, by_id[at] if len(gt_ids) else -1, -1)
    order = np.argsort(-scores, kind="mergesort")  # as pycocotools' accumulate()
    scores, labels, tp, fp = scores[order], labels[order], tp[:, order], fp[:, order]
    return Matches(iou_thresholds, tuple(cat_ids), scores, labels, tp, fp, num_gt,
                   max_dets=int(p.maxDets[-1]), image_ids=image_ids[order],
                   det_ids=det_ids[order], gt_match=gt_match[:, order], gt_ids=gt_ids,
                   gt_image_ids=gt_image_ids, gt_labels=gt_labels, gt_ignore=gt_ignore)


def with_boxes(matches: Matches, coco_gt, detections: List[Dict]) -> Matches:
    """`matches` with the boxes of its detections (results ids: 1 + index in `detections`) and
    GT (`coco_gt` annotation ids), and their same-image overlaps (gn_det.evaluation.overlaps)."""
    det_boxes = np.asarray([detections[i - 1]["bbox"] for i in matches.det_ids.tolist()],
                           dtype=np.float64).reshape(-1, 4)
    anns = [coco_gt.anns[i] for i in matches.gt_ids.tolist()]
    gt_boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    index = {img: i for i, img in enumerate(set(matches.image_ids.tolist())
                                            | set(matches.gt_image_ids.tolist()))}
    overlaps = image_overlaps(
        det_boxes, np.asarray([index[i] for i in matches.image_ids.tolist()], dtype=np.int64),
        gt_boxes, np.asarray([index[i] for i in matches.gt_image_ids.tolist()], dtype=np.int64),
        crowd)
    return dataclasses.replace(matches, boxes=det_boxes, gt_boxes=gt_boxes, gt_crowd=crowd,
                               overlaps=overlaps)


def _evaluate_extra(cocoeval, p, thresholds: List[float], a_all: int) -> list:
    """evaluateImg at IoU thresholds absent from params.iouThrs, area 'all' only, reusing the
    IoU matrices in cocoeval.ious; same (class-major, image) order as evalImgs' 'all' block."""
    extra = copy.copy(cocoeval)  # shares _gts, _dts and ious
    extra.params = copy.deepcopy(p)
    extra.params.iouThrs = np.asarray(thresholds, dtype=np.float64)
    area, max_det = p.areaRng[a_all], p.maxDets[-1]
    return [extra.evaluateImg(img_id, cat_id, area, max_det)
            for cat_id in p.catIds for img_id in p.imgIds]


def counts_at(matches: Matches, score_thresholds: Sequence[float]) -> Tuple[np.ndarray, ...]:
    """(tp, fp, fn), each [T, S, K] int: per IoU threshold, score threshold and class, counting
    the detections with score >= the threshold."""
    n_k = len(matches.category_ids)
    keep = np.searchsorted(-matches.scores, -np.asarray(score_thresholds, dtype=np.float64),
                           side="right")
    shape = (len(matches.iou_thresholds), len(keep), n_k)
    tp, fp = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    for t in range(shape[0]):
        for s, n in enumerate(keep):
            labels = matches.labels[:n]
            tp[t, s] = np.bincount(labels[matches.tp[t, :n]], minlength=n_k)
            fp[t, s] = np.bincount(labels[matches.fp[t, :n]], minlength=n_k)
    fn = matches.num_gt[None, None, :] - tp
    return tp, fp, fn


def ratios(tp, fp, fn) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, f1) from counts; 0 where the denominator is 0 (no detections, no
    ground truth), so an empty result reads as zeros rather than NaN."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return precision, recall, f1


@dataclass(frozen=True)
class Curve:
    """Raw (uninterpolated) precision–recall curve: one point per distinct score, descending."""

    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    num_gt: int

    @property
    def f1(self) -> np.ndarray:
        return ratios(self.tp, self.fp, self.num_gt - self.tp)[2]


def curve(matches: Matches, iou: float, class_index: Optional[int] = None) -> Curve:
    """PR curve of one class, or of all classes pooled (micro) when class_index is None."""
    t = matches.iou_index(iou)
    sel = slice(None) if class_index is None else matches.labels == class_index
    scores = matches.scores[sel]
    tp = np.cumsum(matches.tp[t][sel])
    fp = np.cumsum(matches.fp[t][sel])
    num_gt = int(matches.num_gt.sum() if class_index is None else matches.num_gt[class_index])
    # a threshold keeps all tied scores or none: one point at the end of each tie run
    ends = (np.flatnonzero(np.r_[scores[1:] != scores[:-1], True]) if len(scores)
            else np.zeros(0, int))
    tp, fp = tp[ends], fp[ends]
    precision, recall, _ = ratios(tp, fp, num_gt - tp)
    return Curve(scores[ends], precision, recall, tp, fp, num_gt)


def best_f1(matches: Matches, iou: float, class_index: Optional[int] = None) -> Dict:
    """The score threshold that maximizes F1 (the highest such score on ties) with P/R/F1 and
    counts there; score is None when no threshold gives F1 > 0."""
    c = curve(matches, iou, class_index)
    f1 = c.f1
    if not len(f1) or f1.max() <= 0:
        # no threshold helps: report keeping nothing
        return {"score": None, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                "tp": 0, "fp": 0, "fn": c.num_gt}
    i = int(np.argmax(f1))
    return {"score": float(c.scores[i]), "precision": float(c.precision[i]),
            "recall": float(c.recall[i]), "f1": float(f1[i]), "tp": int(c.tp[i]),
            "fp": int(c.fp[i]), "fn": int(c.num_gt - c.tp[i])}
