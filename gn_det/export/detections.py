"""Detections of one image as numpy arrays, and the check that an exported model's detections are
eager PyTorch's: paired per detection (never by index) within a tolerance, with detections only
one side kept passing only at a score cut-off."""
import dataclasses
from typing import List, Sequence, Union

import numpy as np
import torch
from torchvision.ops import box_iou

from .formats import OUTPUT_NAMES


@dataclasses.dataclass
class Detections:
    """One image's detections as numpy arrays: boxes (N, 4) x0 y0 x1 y1, scores (N,), classes."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def of(cls, instances) -> "Detections":
        return cls(instances.pred_boxes.tensor.detach().numpy().astype(np.float64),
                   instances.scores.detach().numpy().astype(np.float64),
                   instances.pred_classes.detach().numpy().astype(np.int64))

    @classmethod
    def from_outputs(cls, outputs: Sequence) -> "Detections":
        """From the exported graph's flat outputs (OUTPUT_NAMES order)."""
        named = dict(zip(OUTPUT_NAMES, (np.asarray(o) for o in outputs)))
        return cls(named["boxes"].astype(np.float64), named["scores"].astype(np.float64),
                   named["classes"].astype(np.int64))

    def __len__(self):
        return len(self.scores)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far an exported model's detection may be from eager PyTorch's: a box coordinate by
    box_atol pixels plus box_rtol times the box's size (box decoding multiplies the head's
    deltas by anchor sizes, so float noise in the deltas grows with the box), a score by
    score_atol. changed_share: the share of an image's detections that may differ beyond that
    (paired outside the tolerance, or kept by one side only): for reduced-precision forms, where
    NMS and the top-k pick another of two candidates whose scores the precision cannot tell
    apart; 0 for float32 forms. Measured in docs/DEPLOY.md."""

    box_atol: float = 1e-4
    box_rtol: float = 5e-4
    score_atol: float = 2e-5
    changed_share: float = 0.0

    def box_limit(self, boxes: np.ndarray) -> np.ndarray:
        size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        return self.box_atol + self.box_rtol * size

    def describe(self) -> str:
        text = (f"{self.box_atol:g} px + {self.box_rtol:g} x box size; score "
                f"{self.score_atol:g}")
        return text + (f"; up to {self.changed_share:.0%} of an image's detections changed"
                       if self.changed_share else "")


DEFAULT_TOLERANCE = Tolerance()
# bf16 forms against eager float32, measured on a trained BCCD GN+WS RetinaNet R-18 (docs/DEPLOY.md,
# 8 val images): 420 of 439 detections within 0.5 px + 1 % of the box and 0.01 in score; the
# rest (up to 6 of an image's 64, 9 %) changed: NMS kept another of two overlapping boxes whose
# scores bf16 cannot tell apart. 20 % leaves a 2x margin.
BF16_TOLERANCE = Tolerance(box_atol=0.5, box_rtol=0.01, score_atol=0.01, changed_share=0.2)
# A reduced-precision form against the eager model in the same precision: float32's tolerance,
# except that scores rounded through bf16 tie often, and the trace may break a tie at the top-k /
# NMS cut-offs the other way (1 of 75 toy detections): up to 5 % changed.
SAME_PRECISION_TOLERANCE = dataclasses.replace(DEFAULT_TOLERANCE, changed_share=0.05)
# A format's precision (formats.ExportFormat.precision) -> its default tolerance.
TOLERANCES = {"fp32": DEFAULT_TOLERANCE, "bf16": BF16_TOLERANCE}


@dataclasses.dataclass
class Comparison:
    """Exported against eager detections of one image, matched per detection."""

    reference: int
    exported: int
    matched: int
    max_box_diff: float = 0.0     # pixels
    max_box_excess: float = 0.0   # worst |diff| / allowed (<= 1 passes)
    max_score_diff: float = 0.0
    unmatched: List[str] = dataclasses.field(default_factory=list)  # not explained by a cut-off
    changed: int = 0          # with a changed_share: detections beyond the tolerance
    allowed_changed: int = 0  # how many of them the changed_share allows

    @property
    def ok(self) -> bool:
        if self.allowed_changed or self.changed:
            return self.changed <= self.allowed_changed
        return not self.unmatched and self.max_box_excess <= 1.0

    def describe(self) -> str:
        text = (f"{self.matched}/{self.reference} detections matched, max |dbox| "
                f"{self.max_box_diff:.2g} px ({self.max_box_excess:.2g} of the tolerance), max "
                f"|dscore| {self.max_score_diff:.2g}")
        if self.changed or self.allowed_changed:
            text += (f", {self.changed} changed beyond the tolerance (up to "
                     f"{self.allowed_changed} allowed)")
        if self.unmatched:
            text += f"; unmatched: {', '.join(self.unmatched[:3])}"
            text += f" (+{len(self.unmatched) - 3} more)" if len(self.unmatched) > 3 else ""
        return text


def match_detections(reference: Detections, exported: Detections,
                     tolerance: Tolerance = DEFAULT_TOLERANCE,
                     score_thresh: Union[float, np.ndarray] = 0.0,
                     max_detections: int = 0) -> Comparison:
    """Pair each exported detection with an eager one of the same class (IoU >= 0.5), closest
    first (greedy on the box and score differences relative to the tolerance), never relying on
    their order. A detection left unpaired passes only where a cut-off explains it: its score is
    within score_atol of the score threshold (`score_thresh`: one for all classes, or one per
    class index), or of the lowest score kept by the other side when that side holds
    max_detections, or the other side left one unpaired with the same score (a tie that a
    top-k or NMS broke the other way; not a class change on the same box). With a tolerance's
    changed_share, up to that share of the detections may be paired beyond the tolerance or
    unpaired (they are counted as `changed`)."""
    ref, out = reference, exported
    limit = tolerance.box_limit(ref.boxes)
    share = tolerance.changed_share > 0
    pairs = []
    for cls in np.union1d(ref.classes, out.classes):
        i_idx, j_idx = np.flatnonzero(ref.classes == cls), np.flatnonzero(out.classes == cls)
        if not len(i_idx) or not len(j_idx):
            continue
        box = np.abs(ref.boxes[i_idx, None, :] - out.boxes[None, j_idx, :]).max(axis=2)
        score = np.abs(ref.scores[i_idx, None] - out.scores[None, j_idx])
        cost = np.maximum(box / limit[i_idx, None], score / tolerance.score_atol)
        iou = box_iou(torch.from_numpy(ref.boxes[i_idx]), torch.from_numpy(out.boxes[j_idx]))
        cost[~(iou.numpy() >= 0.5)] = np.inf  # NaN (two empty boxes) is no match either
        for a, b in zip(*np.nonzero(np.isfinite(cost))):
            pairs.append((cost[a, b], i_idx[a], j_idx[b], box[a, b], score[a, b]))
    pairs.sort(key=lambda p: p[0])
    used_i, used_j = set(), set()
    result = Comparison(len(ref), len(out), 0)
    for cost, i, j, box, score in pairs:
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        result.matched += 1
        result.max_box_diff = max(result.max_box_diff, float(box))
        result.max_score_diff = max(result.max_score_diff, float(score))
        if share and cost > 1.0:
            result.changed += 1
        else:
            result.max_box_excess = max(result.max_box_excess, float(box / limit[i]))
    left = {}
    for side, dets, used, other in (("eager", ref, used_i, out), ("exported", out, used_j, ref)):
        floor = other.scores.min() if max_detections and len(other) >= max_detections else None
        left[side] = []
        for k in range(len(dets)):
            if k in used:
                continue
            s = dets.scores[k]
            cut = (score_thresh[dets.classes[k]] if isinstance(score_thresh, np.ndarray)
                   else score_thresh)
            if abs(s - cut) <= tolerance.score_atol or (
                    floor is not None and s <= floor + tolerance.score_atol):
                continue  # at a cut-off: float noise decides whether it is kept
            left[side].append(k)
    # a tie broken the other way (at a top-k over anchors and classes, or class-wise NMS): each
    # side kept one of two candidates with the same score, so one unpaired detection per side
    # with equal scores explains the other; a detection whose class changed on the same box
    # (IoU >= 0.5) is a changed detection, never a tie
    def tie(a: int, b: int) -> bool:
        if abs(ref.scores[a] - out.scores[b]) > tolerance.score_atol:
            return False
        if ref.classes[a] == out.classes[b]:
            return True
        overlap = box_iou(torch.from_numpy(ref.boxes[a:a + 1]),
                          torch.from_numpy(out.boxes[b:b + 1]))
        return not bool(overlap[0, 0] >= 0.5)

    ties = sorted(((abs(ref.scores[a] - out.scores[b]), a, b) for a in left["eager"]
                   for b in left["exported"] if tie(a, b)),
                  key=lambda t: t[0])
    tied_a, tied_b = set(), set()
    for _, a, b in ties:
        if a not in tied_a and b not in tied_b:
            tied_a.add(a)
            tied_b.add(b)
    for side, dets, tied in (("eager", ref, tied_a), ("exported", out, tied_b)):
        for k in left[side]:
            if k not in tied:
                result.unmatched.append(f"{side} class {dets.classes[k]} score "
                                        f"{dets.scores[k]:.4f} box "
                                        f"{np.round(dets.boxes[k], 1).tolist()}")
    if share:
        result.changed += len(result.unmatched)
        result.allowed_changed = int(tolerance.changed_share * max(len(ref), len(out)))
    elif result.max_score_diff > tolerance.score_atol:
        result.unmatched.append(f"a score differs by {result.max_score_diff:.2g} "
                                f"(> {tolerance.score_atol:g})")
    return result
