"""Precision, recall and F1 against the score threshold, per class and overall (micro), from the
matches the P/R come from (`gn_det.evaluation.matching.curve`): no second pass.

A threshold x keeps the detections with score >= x, so each quantity is a step function that
changes only at the distinct scores: `ScoreCurve` holds its value at each of them (ascending), and
`at(x)` reads it anywhere. Above the highest score nothing is kept: precision is undefined (NaN,
not drawn), recall and F1 are 0. The best-F1 point is `matching.best_f1`'s, as in metrics.json.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .matching import Matches, best_f1, curve


@dataclass(frozen=True)
class ScoreCurve:
    """P / R / F1 of one class (or "overall") at each distinct detection score, ascending."""

    name: str
    thresholds: np.ndarray  # [S] ascending distinct scores
    precision: np.ndarray   # [S] keeping the detections with score >= thresholds[i]
    recall: np.ndarray
    f1: np.ndarray
    num_gt: int
    best: Dict              # matching.best_f1: score (None when F1 is 0 everywhere), P, R, F1

    def at(self, x) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision, recall, f1) at thresholds x (array-like)."""
        x = np.asarray(x, dtype=np.float64)
        if not len(self.thresholds):
            return np.full(x.shape, np.nan), np.zeros(x.shape), np.zeros(x.shape)
        i = np.searchsorted(self.thresholds, x, side="left")  # the smallest kept score >= x
        kept = i < len(self.thresholds)
        i = np.minimum(i, len(self.thresholds) - 1)
        return (np.where(kept, self.precision[i], np.nan), np.where(kept, self.recall[i], 0.0),
                np.where(kept, self.f1[i], 0.0))

    def drawn_at(self, points: int = 1001, top: float = 1.0) -> np.ndarray:
        """Thresholds to draw the curve at: an even grid over [0, max(top, highest score)] plus
        every distinct score, so each step and the best-F1 point are drawn exactly."""
        top = max(top, float(self.thresholds[-1]) if len(self.thresholds) else 0.0)
        return np.unique(np.concatenate([np.linspace(0.0, top, points), self.thresholds]))


def score_curves(matches: Matches, iou: float, class_names: Sequence[str]) -> List[ScoreCurve]:
    """One ScoreCurve per class (in class-index order), then "overall" (classes pooled)."""
    out = []
    for k, name in [(k, n) for k, n in enumerate(class_names)] + [(None, "overall")]:
        c = curve(matches, iou, k)
        out.append(ScoreCurve(name, c.scores[::-1].copy(), c.precision[::-1].copy(),
                              c.recall[::-1].copy(), c.f1[::-1].copy(), c.num_gt,
                              best_f1(matches, iou, k)))
    return out
