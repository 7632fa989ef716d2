"""Which errors cost the AP: the six error types of TIDE (Bolya et al., ECCV 2020), each with the AP
it costs (dAP: the AP50 gained by fixing that type alone with an oracle), and the false positives
and false negatives at the operating threshold split by type.

Every detection COCO counts as an FP at the IoU threshold t_f (default 0.5; background threshold
t_b = 0.1) gets the first type that applies, in TIDE's order (tidecv 1.0.1's, which decides the
cases the paper leaves open):

    background      its image has no (regular) GT
    localization    its best IoU with a GT of its own class is in [t_b, t_f]
    classification  its best IoU with a GT of another class is >= t_f
    duplicate       its best IoU with an already matched GT of its own class is >= t_f
    background      its best IoU with any GT is <= t_b
    both            the rest: on a GT of another class with t_b < IoU < t_f

and a regular GT no detection matched is "missed" unless a classification or localization error
sits on it. The oracle fixes, one type at a time (the others stay as they are): a
classification / localization error on a GT nobody matched becomes that GT's TP (the highest
scoring one per GT; the others, and those on matched GT, are removed); duplicate, background and
both errors are removed; missed GT are taken out of the GT count. dAP = AP50(fixed) - AP50, at
least 0. Two further oracles (TIDE's "special" errors) fix every FP (all TPs ranked first) or
every FN.

The base is COCO's own AP at t_f (the same matches, areas "all", maxDets 100; tested equal to
COCOeval's AP50). Where tidecv differs from COCO this follows COCO: crowd regions absorb
detections by COCO's rule and such detections are no error; maxDets applies per image and class;
classes without GT take no part in the mean. On data without those cases the dAP equal tidecv's
(docs/REAL_DATA.md has the comparison).
"""
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from .matching import Matches
from .overlaps import best_per_det

ERROR_TYPES = ("classification", "localization", "both", "duplicate", "background", "missed")
FP_TYPES = ERROR_TYPES[:5]
FN_TYPES = ("classification", "localization", "below_threshold", "missed")
BACKGROUND_IOU = 0.1
_RECALLS = np.linspace(0.0, 1.00, 101)  # COCOeval.params.recThrs


@dataclass(frozen=True)
class TideErrors:
    """Each evaluated detection's FP type ("" for a TP or ignored detection) and the GT its
    classification / localization error sits on; each GT's "missed" status."""

    iou: float
    fp_type: np.ndarray    # [N] str
    target: np.ndarray     # [N] int: GT position of a classification / localization error, else -1
    fixer: np.ndarray      # [N] bool: the highest-scoring such error on a GT nobody matched
    missed: np.ndarray     # [G] bool: regular, unmatched, and no such error on it


def classify(matches: Matches, iou: float = 0.5, background_iou: float = BACKGROUND_IOU
             ) -> TideErrors:
    """The TIDE types of every FP at IoU threshold `iou` (see the module docstring)."""
    t = matches.iou_index(iou)
    m, ov = matches, matches.overlaps
    n = len(m.scores)
    regular = ~m.gt_ignore[ov.gt]
    same = m.labels[ov.det] == m.gt_labels[ov.gt]
    used = np.zeros(len(m.gt_ids), bool)
    used[m.gt_match[t][m.tp[t]]] = True
    same_gt, same_iou = best_per_det(ov, regular & same, n)
    other_gt, other_iou = best_per_det(ov, regular & ~same, n)
    _, used_iou = best_per_det(ov, regular & same & used[ov.gt], n)
    _, any_iou = best_per_det(ov, regular, n)
    has_gt = np.zeros(n, bool)
    images_with_gt = set(m.gt_image_ids[~m.gt_ignore].tolist())
    has_gt[:] = [i in images_with_gt for i in m.image_ids.tolist()]

    fp = m.fp[t]
    kind = np.full(n, "", dtype=object)
    target = np.full(n, -1, np.int64)
    todo = fp.copy()

    def assign(mask, name, gts=None):
        hit = todo & mask
        kind[hit] = name
        if gts is not None:
            target[hit] = gts[hit]
        todo[hit] = False

    assign(~has_gt, "background")
    assign((same_iou >= background_iou) & (same_iou <= iou), "localization", same_gt)
    assign(other_iou >= iou, "classification", other_gt)
    assign(used_iou >= iou, "duplicate")
    assign(any_iou <= background_iou, "background")
    assign(np.ones(n, bool), "both")

    # per GT nobody matched: the highest-scoring classification / localization error on it fixes
    # it (ties: the first in image order, as tidecv), which makes the GT not "missed"
    on_free = target >= 0
    on_free[on_free] = ~used[target[on_free]]
    fixer = np.zeros(n, bool)
    cand = np.flatnonzero(on_free)
    if len(cand):
        order = cand[np.lexsort((cand, -m.scores[cand], target[cand]))]
        first = np.r_[True, target[order][1:] != target[order][:-1]]
        fixer[order[first]] = True
    missed = ~m.gt_ignore & ~used
    missed[target[on_free]] = False
    return TideErrors(float(iou), kind, target, fixer, missed)


def average_precision(scores: np.ndarray, labels: np.ndarray, tp: np.ndarray,
                      num_gt: np.ndarray) -> float:
    """COCO's AP at one IoU threshold: per class with GT, 101-point interpolated precision over
    its detections ranked by score (stable: input order breaks ties), then the mean over those
    classes; NaN when no class has GT. `labels` are class indices into num_gt."""
    order = np.lexsort((np.arange(len(scores)), -scores, labels))
    labels, tp = labels[order], tp[order]
    bounds = np.searchsorted(labels, np.arange(len(num_gt) + 1))
    aps = []
    for k, g in enumerate(num_gt.tolist()):
        if g <= 0:
            continue
        t = tp[bounds[k]:bounds[k + 1]]
        if not len(t):
            aps.append(0.0)
            continue
        tps = np.cumsum(t, dtype=np.float64)
        fps = np.cumsum(~t, dtype=np.float64)
        recall = tps / g
        precision = tps / (fps + tps + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, _RECALLS, side="left")
        q = np.where(at < len(t), precision[np.minimum(at, len(t) - 1)], 0.0)
        aps.append(float(np.mean(q)))
    return float(np.mean(aps)) if aps else float("nan")


def tide(matches: Matches, iou: float = 0.5, score: Optional[float] = None,
         background_iou: float = BACKGROUND_IOU) -> Dict:
    """The metrics.json entry: AP at `iou`, dAP per error type (and of the two special
    oracles), error counts over every evaluated detection, and with `score` the FP / FN split
    at that operating threshold."""
    t = matches.iou_index(iou)
    errors = classify(matches, iou, background_iou)
    m = matches
    counted = m.tp[t] | m.fp[t]  # ignored detections take no part in AP
    base = average_precision(m.scores[counted], m.labels[counted], m.tp[t][counted], m.num_gt)
    dap = {}
    for name in ERROR_TYPES:
        dap[name] = _fixed_ap(m, errors, t, name) - base
    dap = {k: max(v, 0.0) if np.isfinite(v) else None for k, v in dap.items()}
    # TIDE's special oracles: every FP ranked below every TP; every FN gone
    ranked = np.where(m.tp[t], 1.0, 0.0)[counted]
    all_fp = average_precision(ranked, m.labels[counted], m.tp[t][counted], m.num_gt) - base
    found = np.bincount(m.labels[m.tp[t]], minlength=len(m.num_gt))
    all_fn = average_precision(m.scores[counted], m.labels[counted], m.tp[t][counted],
                               found) - base
    fp_types = errors.fp_type[m.fp[t]]
    out = {
        "iou": float(iou), "background_iou": float(background_iou),
        "ap": base if np.isfinite(base) else None,
        "dAP": dap,
        "dAP_all_fp": max(all_fp, 0.0) if np.isfinite(all_fp) else None,
        "dAP_all_fn": max(all_fn, 0.0) if np.isfinite(all_fn) else None,
        "counts": {**{k: int(np.sum(fp_types == k)) for k in FP_TYPES},
                   "missed": int(errors.missed.sum())},
        "definitions": "TIDE (Bolya et al. 2020), tidecv's order; dAP: AP at iou gained by "
                       "fixing one type alone (oracle); counts over all evaluated detections",
    }
    if score is not None:
        out["at_score"] = split_at(m, errors, t, float(score))
    return out


def _fixed_ap(m: Matches, errors: TideErrors, t: int, name: str) -> float:
    """AP at IoU index t with the errors of type `name` fixed by the oracle."""
    labels, tp, num_gt = m.labels.copy(), m.tp[t].copy(), m.num_gt.copy()
    keep = m.tp[t] | m.fp[t]
    if name == "missed":
        num_gt -= np.bincount(m.gt_labels[errors.missed], minlength=len(num_gt))
    else:
        mine = errors.fp_type == name
        keep &= ~mine
        if name in ("classification", "localization"):
            fix = mine & errors.fixer
            keep |= fix
            tp |= fix
            labels[fix] = m.gt_labels[errors.target[fix]]
    return average_precision(m.scores[keep], labels[keep], tp[keep], num_gt)


def split_at(m: Matches, errors: TideErrors, t: int, score: float) -> Dict:
    """FP and FN at the operating threshold (score >= `score`) by type. An FN is
    "below_threshold" when a detection below the threshold matched it, else "classification" /
    "localization" when such an error above the threshold sits on it (the highest-scoring one
    decides), else "missed"."""
    kept = m.scores >= score
    fp = m.fp[t] & kept
    fp_counts = {k: int(np.sum(errors.fp_type[fp] == k)) for k in FP_TYPES}
    found = np.zeros(len(m.gt_ids), bool)
    found[m.gt_match[t][m.tp[t] & kept]] = True
    below = np.zeros(len(m.gt_ids), bool)
    below[m.gt_match[t][m.tp[t] & ~kept]] = True
    fn = ~m.gt_ignore & ~found
    cause = np.full(len(m.gt_ids), "missed", dtype=object)
    on = np.flatnonzero(fp & (errors.target >= 0))
    on = on[np.lexsort((on, -m.scores[on]))][::-1]  # lowest first: the highest-scoring wins
    cause[errors.target[on]] = errors.fp_type[on]
    cause[below] = "below_threshold"
    fn_counts = {k: int(np.sum(cause[fn] == k)) for k in FN_TYPES}
    return {"score": score, "fp": fp_counts, "fn": fn_counts,
            "fp_total": int(fp.sum()), "fn_total": int(fn.sum())}
