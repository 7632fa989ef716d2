"""Per-class score thresholds (a thresholds.json: gn_det.evaluation.thresholds) applied to a
detector's inference outputs by a forward hook on its meta-architecture: in eval mode, each image's
detections scoring below their class's threshold are dropped with tensor ops only
(`scores >= table[pred_classes]`), so detectron2's inference loops, --eval-only and a traced /
exported graph all apply the same thresholds. Classes the file lacks keep the model's own test
threshold; a class the file says to keep none of gets +inf."""
import logging
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from ..evaluation.thresholds import Thresholds, ThresholdsError

logger = logging.getLogger(__name__)


def model_score_thresh(model: nn.Module) -> float:
    """The score threshold the model applies by itself at test time (RetinaNet's
    test_score_thresh, an R-CNN box predictor's), 0 where it has none."""
    for owner in (model, getattr(getattr(model, "roi_heads", None), "box_predictor", None)):
        value = getattr(owner, "test_score_thresh", None)
        if value is not None:
            return float(value)
    return 0.0


class ScoreThresholds:
    """The forward hook: a [K] table of thresholds in the model's contiguous class order (its
    thing_classes), the classes' names, and where the thresholds came from."""

    def __init__(self, thresholds: Thresholds, class_names: Sequence[str], default: float):
        self.class_names = list(class_names)
        self.default = float(default)
        self.source, self.rule = thresholds.source, thresholds.rule
        self.from_file = [n for n in self.class_names if n in thresholds.by_name]
        self.table = torch.as_tensor(thresholds.table(self.class_names, self.default),
                                     dtype=torch.float32)

    def __call__(self, module: nn.Module, args, output):
        if module.training or not isinstance(output, (list, tuple)):
            return None  # training returns losses
        for item in output:
            inst = item.get("instances") if isinstance(item, dict) else None
            if inst is None or not (inst.has("scores") and inst.has("pred_classes")):
                continue
            keep = inst.scores >= self.table.to(inst.scores.device)[inst.pred_classes]
            item["instances"] = inst[keep]
        return output

    def as_dict(self) -> Dict:
        """For reports (export.json): the file, its rule, and each class's threshold (None: keep
        none; classes the file lacks show the model's own threshold)."""
        return {"file": self.source, "rule": self.rule, "kept": "score >= threshold",
                "classes_without_entry": f"the model's own test threshold ({self.default:g})",
                "thresholds": {n: (None if t == float("inf") else round(t, 6))
                               for n, t in zip(self.class_names, self.table.tolist())}}

    def describe(self) -> str:
        """One line: the file, its rule, and each class's threshold."""
        shown = ", ".join(f"{n} >= {t:.3g}" if t != float("inf") else f"{n}: none"
                          for n, t in zip(self.class_names, self.table.tolist())
                          if n in self.from_file)
        rest = len(self.class_names) - len(self.from_file)
        return (f"{self.source} ({self.rule}): {shown}"
                + (f"; {rest} other classes keep the model's {self.default:g}" if rest else ""))


def score_thresholds_of(model: nn.Module) -> Optional[ScoreThresholds]:
    """The ScoreThresholds hook attached to `model` (or the model inside DDP), or None."""
    model = getattr(model, "module", model)
    return next((h for h in model._forward_hooks.values() if isinstance(h, ScoreThresholds)),
                None)


def attach_score_thresholds(model: nn.Module, thresholds: Thresholds,
                            class_names: Sequence[str]) -> ScoreThresholds:
    """Make `model` (a detectron2 meta-architecture, or DDP around one) drop, at inference, the
    detections below their class's threshold in `thresholds`; `class_names` are the model's
    classes in its contiguous order. Replaces thresholds attached before. ThresholdsError (one
    line) for a class the file has and the model lacks, or class names of another count than
    the model's classes."""
    model = getattr(model, "module", model)
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and len(class_names) != num_classes:
        raise ThresholdsError(f"{thresholds.source}: the model has {num_classes} classes but its "
                              f"dataset names {len(class_names)}; the thresholds are matched to "
                              f"the model's classes by name")
    hook = ScoreThresholds(thresholds, class_names, model_score_thresh(model))
    for key, old in list(model._forward_hooks.items()):
        if isinstance(old, ScoreThresholds):
            del model._forward_hooks[key]
    model.register_forward_hook(hook)
    return hook
