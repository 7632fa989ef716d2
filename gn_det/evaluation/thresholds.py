"""Per-class score thresholds to deploy with: chosen on a validation set by a rule (best F1, or the
lowest score reaching a target precision), written as thresholds.json by tools/evaluate.py and
PREvaluator, and read back here to filter detections the same way at inference or export.

Light on purpose (numpy only): applying the file to detectron2 Instances goes through their own
tensor methods (duck typing), so neither torch nor detectron2 is imported here.

thresholds.json:
    {"format": "gn_det.thresholds", "version": 1, "rule": "best_f1" | "target_precision",
     "target_precision": 0.9 or null, "iou": 0.5, "kept": "score >= threshold",
     "classes": {"<name>": {"category_id": 3, "threshold": 0.47 or null, "precision": ...,
                            "recall": ..., "f1": ..., "tp": ..., "fp": ..., "fn": ...}, ...}}
A null threshold keeps none of that class's detections: no score gave F1 > 0 (best F1), or none
reached the target precision.
"""
import logging
import math
import os
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..utils.file_io import JSONFileError, read_json, write_json
from .matching import Matches, curve

logger = logging.getLogger(__name__)

FORMAT = "gn_det.thresholds"
VERSION = 1
RULES = ("best_f1", "target_precision")


class ThresholdsError(ValueError):
    """A thresholds file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Thresholds:
    """Per-class score thresholds: by class name and by dataset category id; None keeps none
    of the class."""

    by_name: Dict[str, Optional[float]]
    by_category_id: Dict[int, Optional[float]]
    rule: str = "best_f1"
    source: str = "thresholds"

    def for_class_names(self, class_names: Sequence[str]) -> np.ndarray:
        """[K] float thresholds for contiguous class indices named `class_names` (e.g. a
        dataset's thing_classes), +inf where the file says keep none. ThresholdsError names the
        classes the file lacks."""
        missing = [n for n in class_names if n not in self.by_name]
        if missing:
            raise ThresholdsError(f"{self.source}: 'classes' has no entry for "
                                  f"{', '.join(map(repr, missing[:5]))}"
                                  f"{' ...' if len(missing) > 5 else ''}; it has "
                                  f"{', '.join(map(repr, list(self.by_name)[:8]))}")
        return np.asarray([_inf(self.by_name[n]) for n in class_names], dtype=np.float64)

    def table(self, class_names: Sequence[str], default: float = -math.inf,
              whose: str = "the model") -> np.ndarray:
        """[K] thresholds matched by name to `class_names` (a model's thing_classes, a ground
        truth's categories): +inf where the file says keep none, `default` for the classes the
        file lacks. A class in the file that `class_names` lacks is a ThresholdsError naming it
        (the file was chosen for another model)."""
        known = set(class_names)
        extra = [n for n in self.by_name if n not in known]
        if extra:
            raise ThresholdsError(f"{self.source}: classes[{extra[0]!r}]: {whose} has no class "
                                  f"{extra[0]!r}; its classes are "
                                  f"{', '.join(map(repr, list(class_names)[:8]))}"
                                  f"{' ...' if len(class_names) > 8 else ''}")
        return np.asarray([_inf(self.by_name[n]) if n in self.by_name else float(default)
                           for n in class_names], dtype=np.float64)

    def keep(self, scores, labels, class_names: Optional[Sequence[str]] = None) -> np.ndarray:
        """[N] bool: score >= its class's threshold. `labels` are dataset category ids, or
        contiguous indices into `class_names` when those are given."""
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if class_names is not None:
            table = self.for_class_names(class_names)
            return scores >= table[labels] if len(labels) else np.zeros(0, bool)
        unknown = sorted(set(labels.tolist()) - set(self.by_category_id))
        if unknown:
            raise ThresholdsError(f"{self.source}: 'classes' has no category_id {unknown[0]}; "
                                  f"it has {sorted(self.by_category_id)}")
        thr = np.asarray([_inf(self.by_category_id[c]) for c in labels.tolist()], np.float64)
        return scores >= thr


def threshold_results(detections, thresholds: Thresholds, category_names: Mapping[int, str]):
    """The results-file detections (a list of dicts with category_id and score, or
    results.Detections: the same kind is returned) that pass `thresholds`,
    matched by class name to `category_names` (ground truth id -> name): what a model deployed
    with the file would have output. Classes the file lacks keep all their detections; a class
    in the file the ground truth lacks is a ThresholdsError."""
    ids = list(category_names)
    table = dict(zip(ids, thresholds.table([category_names[i] for i in ids],
                                           whose="the ground truth").tolist()))
    kept = type(detections)(d for d in detections if d["score"] >= table[d["category_id"]])
    logger.info("score thresholds %s (%s): kept %d of %d detections", thresholds.source,
                thresholds.rule, len(kept), len(detections))
    return kept


def _inf(value: Optional[float]) -> float:
    return math.inf if value is None else float(value)


def apply_thresholds(detections, thresholds: Thresholds,
                     class_names: Optional[Sequence[str]] = None):
    """The detections that pass `thresholds`, of the same kind as given:
    - a list of COCO result dicts (category_id, score): the kept dicts;
    - detectron2 Instances (pred_classes: contiguous indices, so `class_names` is needed, e.g.
      MetadataCatalog.get(name).thing_classes) or anything with `scores`, `pred_classes` tensors
      and boolean indexing: instances[keep].
    """
    if hasattr(detections, "scores") and hasattr(detections, "pred_classes"):
        if class_names is None:
            raise ThresholdsError(f"{thresholds.source}: applying thresholds to Instances needs "
                                  "the class names of pred_classes (e.g. thing_classes)")
        table = thresholds.for_class_names(class_names)
        scores = detections.scores
        keep = scores >= scores.new_tensor(table)[detections.pred_classes]
        return detections[keep]
    detections = list(detections)
    keep = thresholds.keep([d["score"] for d in detections],
                           [d["category_id"] for d in detections], None)
    return [d for d, k in zip(detections, keep.tolist()) if k]


def read_thresholds(path) -> Thresholds:
    """The thresholds in a thresholds.json; ThresholdsError (one line, naming the file and the
    field) for anything else."""
    path = os.fspath(path)
    try:
        data = read_json(path, "thresholds")
    except JSONFileError as e:
        raise ThresholdsError(str(e)) from None
    return parse_thresholds(data, path)


def parse_thresholds(data, source: str = "thresholds") -> Thresholds:
    """Thresholds from the parsed JSON of a thresholds file (see the module docstring)."""
    if not isinstance(data, dict):
        raise ThresholdsError(f"{source}: top level is a JSON {type(data).__name__}; expected an "
                              f"object with 'format': {FORMAT!r} and 'classes'")
    if data.get("format") != FORMAT:
        raise ThresholdsError(f"{source}: 'format' is {data.get('format')!r}; expected {FORMAT!r} "
                              "(a file written by tools/evaluate.py or PREvaluator)")
    if data.get("version") != VERSION:
        raise ThresholdsError(f"{source}: 'version' is {data.get('version')!r}; this gn_det "
                              f"reads version {VERSION}")
    classes = data.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise ThresholdsError(f"{source}: 'classes' is {_short(classes)}; expected an object "
                              "mapping each class name to its threshold entry")
    by_name, by_id = {}, {}
    for name, entry in classes.items():
        where = f"{source}: classes[{name!r}]"
        if not isinstance(entry, dict):
            raise ThresholdsError(f"{where}: is {_short(entry)}; expected an object with "
                                  "'category_id' and 'threshold'")
        cat = entry.get("category_id")
        if not isinstance(cat, Integral) or isinstance(cat, bool):
            raise ThresholdsError(f"{where}.category_id: is {_short(cat)}; expected an integer")
        if cat in by_id:
            raise ThresholdsError(f"{where}.category_id: {cat} is also another class's")
        thr = entry.get("threshold", "absent")
        if thr is not None and (not isinstance(thr, Real) or isinstance(thr, bool)
                                or not math.isfinite(thr)):
            raise ThresholdsError(f"{where}.threshold: is {_short(thr)}; expected a finite "
                                  "number, or null to keep none of the class")
        by_name[str(name)] = None if thr is None else float(thr)
        by_id[int(cat)] = by_name[str(name)]
    rule = data.get("rule", "best_f1")
    return Thresholds(by_name, by_id, str(rule), source)


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def choose_thresholds(matches: Matches, iou: float, class_names: Sequence[str],
                      target_precision: Optional[float] = None) -> Dict:
    """The thresholds.json content for `matches` at `iou`: per class the best-F1 score, or with
    `target_precision` the lowest score whose precision reaches it (the most recall at that
    precision), with P/R/F1 and counts there."""
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision {target_precision} is outside (0, 1]")
    classes = {}
    for k, name in enumerate(class_names):
        c = curve(matches, iou, k)
        f1 = c.f1
        if target_precision is None:
            i = int(np.argmax(f1)) if len(f1) and f1.max() > 0 else None
        else:
            ok = np.flatnonzero(c.precision >= target_precision - 1e-12)
            i = int(ok[-1]) if len(ok) else None  # the lowest such score: most recall
        entry = {"category_id": int(matches.category_ids[k]),
                 "threshold": None if i is None else float(c.scores[i])}
        if i is None:
            entry.update(precision=None, recall=0.0, f1=0.0, tp=0, fp=0, fn=int(c.num_gt))
        else:
            entry.update(precision=float(c.precision[i]), recall=float(c.recall[i]),
                         f1=float(f1[i]), tp=int(c.tp[i]), fp=int(c.fp[i]),
                         fn=int(c.num_gt - c.tp[i]))
        classes[name] = entry
    return {"format": FORMAT, "version": VERSION,
            "rule": "best_f1" if target_precision is None else "target_precision",
            "target_precision": target_precision, "iou": float(iou),
            "kept": "score >= threshold", "null_threshold": "keep none of the class",
            "classes": classes}


def write_thresholds(content: Mapping, path: str) -> str:
    """thresholds.json (atomically, strict JSON)."""
    return write_json(path, dict(content), indent=1)


def thresholds_table_rows(content: Mapping) -> List[Dict]:
    """Per class: name, threshold and the P/R/F1 it gives on the evaluated data."""
    return [dict(name=n, **e) for n, e in content["classes"].items()]
