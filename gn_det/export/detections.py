"""Detections of one image as numpy arrays, and the check that an exported model's detections are
eager PyTorch's: paired per detection (never by index) within a tolerance, with detections only
one side kept passing only at a score cut-off."""
import dataclasses
from typing import List, Sequence

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
    score_atol. Measured in docs/DEPLOY.md."""

    box_atol: float = 1e-4
    box_rtol: float = 5e-4
    score_atol: float = 2e-5

    def box_limit(self, boxes: np.ndarray) -> np.ndarray:
        size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        return self.box_atol + self.box_rtol * size


DEFAULT_TOLERANCE = Tolerance()


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

    @property
    def ok(self) -> bool:
        return not self.unmatched and self.max_box_excess <= 1.0

    def describe(self) -> str:
        text = (f"{self.matched}/{self.reference} detections matched, max |dbox| "
                f"{self.max_box_diff:.2g} px ({self.max_box_excess:.2g} of the tolerance), max "
                f"|dscore| {self.max_score_diff:.2g}")
        if self.unmatched:
            text += f"; unmatched: {', '.join(self.unmatched[:3])}"
            text += f" (+{len(self.unmatched) - 3} more)" if len(self.unmatched) > 3 else ""
        return text


def match_detections(reference: Detections, exported: Detections,
                     tolerance: Tolerance = DEFAULT_TOLERANCE, score_thresh: float = 0.0,
                     max_detections: int = 0) -> Comparison:
    """Pair each exported detection with an eager one of the same class (IoU >= 0.5), closest
    first (greedy on the box and score differences relative to the tolerance), never relying on
    their order. A detection left unpaired passes only where a cut-off explains it: its score is
    within score_atol of the score threshold, or of the lowest score kept by the other side when
    that side holds max_detections."""
    ref, out = reference, exported
    limit = tolerance.box_limit(ref.boxes)
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
    for _, i, j, box, score in pairs:
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        result.matched += 1
        result.max_box_diff = max(result.max_box_diff, float(box))
        result.max_box_excess = max(result.max_box_excess, float(box / limit[i]))
        result.max_score_diff = max(result.max_score_diff, float(score))
    for side, dets, used, other in (("eager", ref, used_i, out), ("exported", out, used_j, ref)):
        floor = other.scores.min() if max_detections and len(other) >= max_detections else None
        for k in range(len(dets)):
            if k in used:
                continue
            s = dets.scores[k]
            if abs(s - score_thresh) <= tolerance.score_atol or (
                    floor is not None and s <= floor + tolerance.score_atol):
                continue  # at a cut-off: float noise decides whether it is kept
            result.unmatched.append(f"{side} class {dets.classes[k]} score {s:.4f} box "
                                    f"{np.round(dets.boxes[k], 1).tolist()}")
    if result.max_score_diff > tolerance.score_atol:
        result.unmatched.append(f"a score differs by {result.max_score_diff:.2g} "
                                f"(> {tolerance.score_atol:g})")
    return result
