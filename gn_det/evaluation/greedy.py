"""COCO's matching rule, vectorized, at any IoU thresholds: the matches P/R/F1, the confusion
matrix and the TIDE error types read when the engine keeps its own inside C++ (faster-coco-eval).

The rule is COCOeval.evaluateImg's for area range "all": per image and class, the detections by
descending score (stable), the first maxDets; each takes the not yet matched regular GT with the
highest IoU >= the threshold (the later one in file order on equal IoU); failing that, the
ignored GT (crowd regions, which absorb any number of detections, or a GT whose area is outside
COCO's range) with the highest IoU. A detection matched to an ignored GT, or unmatched with an area
outside the range, is neither TP nor FP.

Run over all images at once: the k-th detection of every (image, class) is matched in the same
step (they never compete), so a step is a few numpy calls and there are at most maxDets steps.
The positions and order of everything are those of gn_det.evaluation.matching.match_from_cocoeval
(pycocotools' evalImgs), so both give identical Matches; tests hold them equal.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from .matching import Matches
from .overlaps import Overlaps, image_overlaps
from .results import Detections, _ids, detection_columns

_AREA_ALL = (0.0, 1e5 ** 2)


def match_detections(coco_gt, detections: List[Dict], iou_thresholds: Sequence[float],
                     img_ids: Optional[Sequence] = None, max_dets: int = 100) -> Matches:
    """Matches of validated detections (gn_det.evaluation.results.load_results; `id` 1..N in
    list order, as results_to_coco numbers them) against `coco_gt`, at `iou_thresholds`, over
    the images `img_ids` (default all), with their boxes and every same-image overlap."""
    iou_thresholds = tuple(float(t) for t in iou_thresholds)
    for t in iou_thresholds:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"IoU threshold {t} is outside (0, 1]")
    cat_ids = sorted(coco_gt.cats)
    images = list(coco_gt.imgs) if img_ids is None else list(img_ids)
    image_index = {img: i for i, img in enumerate(sorted(set(images)))}
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    gt = _gt_table(coco_gt.dataset["annotations"], image_index, cat_index)
    det = _det_table(detections, image_index, cat_index, max_dets)
    overlaps = image_overlaps(det["box"], det["image"], gt["box"], gt["image"], gt["crowd"])
    n_t, n = len(iou_thresholds), len(det["score"])
    tp = np.zeros((n_t, n), bool)
    fp = np.zeros((n_t, n), bool)
    gt_match = np.full((n_t, n), -1, np.int64)
    same = det["label"][overlaps.det] == gt["label"][overlaps.gt]
    det_area = det["box"][:, 2] * det["box"][:, 3]
    area_out = (det_area < _AREA_ALL[0]) | (det_area > _AREA_ALL[1])
    for t, iou in enumerate(iou_thresholds):
        match = _greedy(overlaps, same, min(iou, 1 - 1e-10), det["rank"], gt, n)
        hit = match >= 0
        tp[t][hit] = ~gt["ignore"][match[hit]]
        fp[t] = ~hit & ~area_out
        gt_match[t] = match
    num_gt = np.bincount(gt["label"][~gt["ignore"]], minlength=len(cat_ids)).astype(np.int64)
    return Matches(iou_thresholds, tuple(cat_ids), det["score"], det["label"], tp, fp, num_gt,
                   max_dets=max_dets, image_ids=det["image_id"], det_ids=det["id"],
                   gt_match=gt_match, gt_ids=gt["id"], gt_image_ids=gt["image_id"],
                   gt_labels=gt["label"], gt_ignore=gt["ignore"], boxes=det["box"],
                   gt_boxes=gt["box"], gt_crowd=gt["crowd"], overlaps=overlaps)


def _gt_table(annotations: List[Dict], image_index: Dict, cat_index: Dict) -> Dict:
    """The evaluated GT in Matches order (class, image, ignored last, file order)."""
    rows = [(i, image_index[a["image_id"]], cat_index[a["category_id"]])
            for i, a in enumerate(annotations)
            if a["image_id"] in image_index and a["category_id"] in cat_index]
    if rows:
        file_index, image, label = (np.asarray(c, dtype=np.int64) for c in zip(*rows))
    else:
        file_index = image = label = np.zeros(0, np.int64)
    anns = [annotations[i] for i in file_index.tolist()]
    crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    area = np.asarray([a["area"] for a in anns], dtype=np.float64)
    ignore = crowd | (area < _AREA_ALL[0]) | (area > _AREA_ALL[1])
    order = np.lexsort((file_index, ignore, image, label))
    box = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    ids = np.asarray([a["id"] for a in anns], dtype=np.int64)
    image_ids = _ids([a["image_id"] for a in anns])
    return {"id": ids[order], "image": image[order], "image_id": image_ids[order],
            "label": label[order], "box": box[order], "crowd": crowd[order],
            "ignore": ignore[order]}


def _det_table(detections: List[Dict], image_index: Dict, cat_index: Dict, max_dets: int
               ) -> Dict:
    """The evaluated detections (the first max_dets per image and class by descending score,
    stable) in Matches order (score descending; ties: class, image, file order), with each one's
    rank in its image and class."""
    cols = (detections.columns if isinstance(detections, Detections)
            else detection_columns(detections))
    image = _lookup(cols["image_id"], image_index)
    label = _lookup(cols["category_id"], cat_index)
    score = cols["score"]
    file_index = np.flatnonzero((image >= 0) & (label >= 0))
    image, label, score = image[file_index], label[file_index], score[file_index]
    by_group = np.lexsort((file_index, -score, label, image))
    img_s, lab_s = image[by_group], label[by_group]
    new_group = np.r_[True, (img_s[1:] != img_s[:-1]) | (lab_s[1:] != lab_s[:-1])][:len(img_s)]
    starts = np.flatnonzero(new_group)
    pos = np.arange(len(by_group))
    rank = np.empty_like(pos)
    rank[by_group] = pos - starts[np.cumsum(new_group) - 1]
    kept = rank < max_dets
    order = np.flatnonzero(kept)[np.lexsort((file_index[kept], image[kept], label[kept],
                                             -score[kept]))]
    file_index = file_index[order]
    return {"id": file_index + 1, "image": image[order], "label": label[order],
            "score": score[order], "rank": rank[order], "box": cols["bbox"][file_index],
            "image_id": cols["image_id"][file_index]}


def _lookup(ids: np.ndarray, index: Dict) -> np.ndarray:
    """index[id] for each id (-1 where absent), through the distinct ids only."""
    if not len(ids):
        return np.zeros(0, np.int64)
    distinct, inverse = np.unique(ids, return_inverse=True)
    return np.asarray([index.get(v, -1) for v in distinct.tolist()], np.int64)[inverse]


def _greedy(overlaps: Overlaps, same: np.ndarray, thr: float, rank: np.ndarray, gt: Dict,
            n: int) -> np.ndarray:
    """[N] GT position each detection is matched to at IoU >= thr (-1: none)."""
    e = same & (overlaps.iou >= thr)
    d, g, v = overlaps.det[e], overlaps.gt[e], overlaps.iou[e]
    ignored = gt["ignore"][g]
    order = np.lexsort((g, v, ignored, d, rank[d]))  # g: Matches GT order is file order here
    d, g, v, ignored = d[order], g[order], v[order], ignored[order]
    r = rank[d]
    bounds = np.searchsorted(r, np.arange(int(r.max()) + 2 if len(r) else 1))
    match = np.full(n, -1, np.int64)
    taken = np.zeros(len(gt["ignore"]), bool)
    crowd = gt["crowd"]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a == b:
            continue
        dd, gg, ig = d[a:b], g[a:b], ignored[a:b]
        free = ~taken[gg] | crowd[gg]
        chosen = _last_per_det(dd, free & ~ig)
        rest = free & ig & ~np.isin(dd, dd[chosen])
        chosen = np.concatenate([chosen, _last_per_det(dd, rest)])
        match[dd[chosen]] = gg[chosen]
        taken[gg[chosen]] = True
    return match


def _last_per_det(d: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Indices of the last True of `mask` per run of equal `d` (d sorted)."""
    idx = np.flatnonzero(mask)
    if not len(idx):
        return idx
    dv = d[idx]
    return idx[np.r_[dv[1:] != dv[:-1], True]]
