"""What went wrong where, at the operating point: each detection's kind (TP or which FP), each
GT's (found or missed), and per-image error counts, for the error viewer (tools/show_errors.py).

Everything comes from one evaluation's `Outcomes` (gn_det.evaluation.confusion: COCOeval's matches
plus its cross-class pairing). Each kept FP gets the first kind that applies:

1. "wrong_class", paired: the confusion matrix paired it with a GT of another class that no
   detection of that class matched (an off-diagonal cell; first, so the two always agree);
2. "duplicate": IoU >= the threshold with a GT of its own class, which a higher-scoring detection
   matched (why COCOeval left it unmatched);
3. "wrong_class", unpaired: IoU >= the threshold with a GT of another class that is already
   taken (found by its own class, or paired with a higher-scoring wrong-class detection); the
   confusion matrix counts these in its background row, having no FN left to pair them with;
4. "poor_localization": its best IoU with a GT of its own class is in [0.1, threshold);
5. "background": the rest (IoU < 0.1 with every GT of its class, < threshold with all others).

A GT is "tp" when a detection of its class matched it, else "fn" (whether or not a wrong-class
detection sits on it: it is an FN in P/R either way); crowd regions are "crowd", and detections
they absorb are "ignored": neither counts. IoUs are the matches' same-image overlaps
(gn_det.evaluation.overlaps: COCO's box IoU).

These kinds answer "what is this detection on the picture"; gn_det.evaluation.tide classifies
the same FPs by the TIDE paper's rules instead, to say how much AP each kind costs.
"""
import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..utils.file_io import atomic_write, write_json
from .confusion import Outcomes, outcomes_at
from .metrics import Evaluation
from .overlaps import best_per_det

FP_KINDS = ("wrong_class", "duplicate", "poor_localization", "background")
POOR_LOCALIZATION_IOU = 0.1
COUNT_FIELDS = ("gt", "tp", "fp", *(f"fp_{k}" for k in FP_KINDS), "fn", "errors")


@dataclass
class ImageErrors:
    """One image at the operating point: its GT and kept detections (XYWH boxes, class index)
    with their outcome, and the counts."""

    image_id: int
    file_name: str
    width: int
    height: int
    # id, bbox, label, status ("tp", "fn", "crowd"), confused_with (class of the wrong-class
    # detection paired with a missed GT)
    gt: List[Dict] = field(default_factory=list)
    # bbox, label, score, kind, iou (best with its class), gt_label (class of the GT it is on),
    # paired (an FP the confusion matrix pairs with a missed GT of another class)
    dets: List[Dict] = field(default_factory=list)

    @property
    def counts(self) -> Dict[str, int]:
        kinds = Counter(d["kind"] for d in self.dets)
        status = Counter(g["status"] for g in self.gt)
        out = {"gt": status["tp"] + status["fn"], "tp": kinds["tp"],
               "fp": sum(kinds[k] for k in FP_KINDS)}
        out.update({f"fp_{k}": kinds[k] for k in FP_KINDS})
        out["fn"] = status["fn"]
        out["errors"] = out["fp"] + out["fn"]
        return out


def classify(evaluation: Evaluation, outcomes: Outcomes):
    """(kinds, ious, on_gt) per detection of evaluation.matches. kinds [N] str: "tp", an FP kind,
    "ignored" (absorbed by a crowd region) or "" (below the score threshold: not shown); ious [N]
    float: the best IoU with a regular GT of the detection's class in its image (NaN for "");
    on_gt [N] int: GT position it sits on (TP: its match; wrong class: that GT), else -1."""
    m = evaluation.matches
    t = m.iou_index(outcomes.iou)
    thr = min(outcomes.iou, 1 - 1e-10)
    ignored = m.ignored[t] & (m.scores >= outcomes.score)
    kinds = np.full(len(m.scores), "", dtype=object)
    kinds[ignored] = "ignored"
    kinds[outcomes.tp] = "tp"
    shown = outcomes.kept | ignored
    same_gt, same_iou = best_gt(m, True)
    ious = np.where(shown, same_iou, np.nan)
    fp = outcomes.fp
    kinds[fp] = np.where(ious[fp] >= thr, "duplicate",
                         np.where(ious[fp] >= POOR_LOCALIZATION_IOU, "poor_localization",
                                  "background"))
    on_gt = outcomes.paired_gt.copy()
    kinds[fp & (on_gt >= 0)] = "wrong_class"
    other_gt, other_iou = best_gt(m, False)
    rest = fp & (on_gt < 0) & (kinds != "duplicate") & (other_iou >= thr)
    kinds[rest], on_gt[rest] = "wrong_class", other_gt[rest]
    return kinds, ious, on_gt


def best_gt(matches, same_class: bool):
    """(GT position [N], IoU [N]) of each detection's best-overlapping regular GT in its image,
    among those of its own class (`same_class`) or of the other classes; (-1, 0.0) when none."""
    ov = matches.overlaps
    keep = ~matches.gt_ignore[ov.gt] & (
        (matches.labels[ov.det] == matches.gt_labels[ov.gt]) == same_class)
    return best_per_det(ov, keep, len(matches.scores))


def image_errors(evaluation: Evaluation, iou: Optional[float] = None,
                 score: Optional[float] = None) -> List[ImageErrors]:
    """Every evaluated image (in the order of COCOeval's image ids) at (iou, score), by default
    the evaluation's main thresholds."""
    iou = evaluation.main_iou if iou is None else float(iou)
    score = evaluation.main_score if score is None else float(score)
    outcomes = evaluation.outcomes
    if outcomes is None or (outcomes.iou, outcomes.score) != (iou, score):
        outcomes = outcomes_at(evaluation.matches, iou, score)
    m, coco_gt = evaluation.matches, evaluation.coco_gt
    kinds, ious, on_gt = classify(evaluation, outcomes)
    images = {}
    for image_id in evaluation.image_ids:
        img = coco_gt.imgs[image_id]
        images[int(image_id)] = ImageErrors(int(image_id), str(img.get("file_name", "")),
                                            int(img.get("width", 0)), int(img.get("height", 0)))
    for g in range(len(m.gt_ids)):
        hit = int(outcomes.gt_hit[g])
        status = ("crowd" if m.gt_ignore[g] else "tp" if hit >= 0 and outcomes.tp[hit]
                  else "fn")
        images[int(m.gt_image_ids[g])].gt.append({
            "id": int(m.gt_ids[g]), "bbox": m.gt_boxes[g].tolist(),
            "label": int(m.gt_labels[g]), "status": status,
            "confused_with": int(m.labels[hit]) if status == "fn" and hit >= 0 else None})
    for d in np.flatnonzero(kinds != "").tolist():
        paired = int(on_gt[d])
        images[int(m.image_ids[d])].dets.append({
            "id": int(m.det_ids[d]), "bbox": m.boxes[d].tolist(),
            "label": int(m.labels[d]), "score": float(m.scores[d]), "kind": str(kinds[d]),
            "iou": float(ious[d]),
            "gt_label": int(m.gt_labels[paired]) if paired >= 0 else None,
            "paired": bool(outcomes.fp[d] and outcomes.paired_gt[d] >= 0)})
    return list(images.values())


def worst_images(errors: Sequence[ImageErrors], num: int) -> List[ImageErrors]:
    """The `num` images with most errors (FP + FN); ties: more FN first, then image id."""
    ranked = sorted(errors, key=lambda e: (-e.counts["errors"], -e.counts["fn"], e.image_id))
    return [e for e in ranked[:num] if e.counts["errors"] > 0]


def totals(errors: Sequence[ImageErrors]) -> Dict[str, int]:
    """The counts summed over images."""
    out = Counter()
    for e in errors:
        out.update(e.counts)
    return {k: int(out[k]) for k in COUNT_FIELDS}


def write_image_errors(errors: Sequence[ImageErrors], csv_path: str, json_path: str,
                       settings: Dict) -> None:
    """Per-image counts, worst first: a CSV (one row per image) and a JSON with the settings,
    the totals and the rows."""
    ranked = worst_images(errors, len(errors))
    ranked += [e for e in errors if e.counts["errors"] == 0]
    rows = [{"image_id": e.image_id, "file_name": e.file_name, **e.counts} for e in ranked]
    text = io.StringIO()
    writer = csv.DictWriter(text, ["image_id", "file_name", *COUNT_FIELDS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(csv_path, lambda f: f.write(text.getvalue().encode("utf-8")))
    write_json(json_path, {"settings": settings, "totals": totals(errors), "images": rows},
               indent=1)
