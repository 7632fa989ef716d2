"""Load and validate COCO ground truth and detection results before pycocotools sees them.

pycocotools reports bad input with bare asserts or KeyErrors deep inside COCOeval; here every
problem is one exception naming the file, the entry index, the field and what would be valid:
`GroundTruthError` for the annotation file, `ResultsError` for a results file. Both are
`EvaluationInputError`, a ValueError.
"""
import contextlib
import io
import logging
import math
import os
from numbers import Integral, Real
from typing import Dict, Iterable, List, Optional, Sequence, Union

from pycocotools.coco import COCO

from ..utils.file_io import JSONFileError, read_json

logger = logging.getLogger(__name__)

Source = Union[str, os.PathLike, List[Dict], Dict]


class EvaluationInputError(ValueError):
    """Bad evaluation input; the message names the source, entry and field at fault."""

    def __init__(self, source: str, message: str, index: Optional[int] = None,
                 field: Optional[str] = None):
        self.source, self.index, self.field = source, index, field
        where = source if index is None else f"{source}: entry {index}"
        if field is not None:
            where += f": {field!r}"
        super().__init__(f"{where}: {message}")


class GroundTruthError(EvaluationInputError):
    """The ground-truth (COCO annotation) file is unusable."""


class ResultsError(EvaluationInputError):
    """A detection results file is unusable."""


def _read_json(path, error_cls, what: str):
    try:
        return read_json(path, what)
    except JSONFileError as e:
        raise error_cls(e.path, e.reason) from None


def _is_number(v) -> bool:
    t = type(v)
    if t is float:  # the common cases first: this runs ~5 times per detection
        return math.isfinite(v)
    if t is int:
        return True
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _describe_ids(ids: Iterable, limit: int = 8) -> str:
    try:
        ids = sorted(ids)
    except TypeError:  # mixed id types
        ids = sorted(ids, key=str)
    if ids and all(isinstance(i, Integral) for i in ids) \
            and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}" if len(ids) > 1 else f"{ids[0]}"
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _check_box(bbox, error_cls, source, index):
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and _is_number(bbox[0])
            and _is_number(bbox[1]) and _is_number(bbox[2]) and _is_number(bbox[3])):
        raise error_cls(source, f"is {_short(bbox)}; expected 4 finite numbers "
                                "[x, y, width, height]",
                        index, "bbox")
    if bbox[2] < 0 or bbox[3] < 0:
        raise error_cls(source, f"is {_short(bbox)}: width and height must be >= 0 "
                                "(COCO boxes are [x, y, width, height], not corners)",
                        index, "bbox")


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def load_ground_truth(source: Source) -> COCO:
    """A pycocotools COCO for a COCO annotation file (or dict), validated and normalized.

    Fills what pycocotools needs but COCO files often omit: `iscrowd` (0) and `area` (box area).
    Annotation ids that pycocotools cannot use (missing, 0, or repeated: it marks a match to id 0 as
    no match) are renumbered 1..N with a warning; nothing else refers to them in box evaluation.
    """
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "ground truth"
    data = _read_json(source, GroundTruthError, "annotation") if name != "ground truth" else source
    if not isinstance(data, dict):
        raise GroundTruthError(name, f"top level is a JSON {type(data).__name__}; expected a COCO "
                                     "object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            hint = (" (a test split without labels cannot be evaluated)"
                    if key == "annotations" else "")
            raise GroundTruthError(name, f"missing list {key!r}; a COCO annotation file has "
                                         f"'images', 'annotations' and 'categories'{hint}")
    images, cats = data["images"], data["categories"]
    image_ids, cat_ids = set(), set()
    for i, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img:
            raise GroundTruthError(name, "an image needs an 'id'", i, "images")
        if img["id"] in image_ids:
            raise GroundTruthError(name, f"image id {img['id']!r} appears twice", i, "images")
        image_ids.add(img["id"])
    for i, cat in enumerate(cats):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), Integral):
            raise GroundTruthError(name, "a category needs an integer 'id'", i, "categories")
        if cat["id"] in cat_ids:
            raise GroundTruthError(name, f"category id {cat['id']} appears twice", i, "categories")
        cat_ids.add(cat["id"])
    if not cats:
        raise GroundTruthError(name, "'categories' is empty; evaluation needs at least one")

    annotations = []
    ann_ids = set()
    renumber = False
    for i, ann in enumerate(data["annotations"]):
        src = f"{name}: annotations"
        if not isinstance(ann, dict):
            raise GroundTruthError(src, f"is a {type(ann).__name__}; expected an object", i)
        if ann.get("image_id") not in image_ids:
            raise GroundTruthError(src, f"is {_short(ann.get('image_id'))}, not an id in 'images' "
                                        f"(valid: {_describe_ids(image_ids)})", i, "image_id")
        if ann.get("category_id") not in cat_ids:
            raise GroundTruthError(src, f"is {_short(ann.get('category_id'))}, not an id in "
                                        f"'categories' (valid: {_describe_ids(cat_ids)})",
                                   i, "category_id")
        _check_box(ann.get("bbox"), GroundTruthError, src, i)
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        if not _is_number(ann.get("area")):
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        ann_id = ann.get("id")
        if not isinstance(ann_id, Integral) or ann_id == 0 or ann_id in ann_ids:
            renumber = True
        ann_ids.add(ann_id)
        annotations.append(ann)
    if renumber:
        logger.warning("%s: annotation ids are missing, 0 or repeated; renumbering them 1..%d "
                       "(pycocotools counts a match to id 0 as no match)", name, len(annotations))
        for k, ann in enumerate(annotations):
            ann["id"] = k + 1
    coco = COCO()
    coco.dataset = dict(data, annotations=annotations)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_results(source: Source, coco_gt: COCO, name: Optional[str] = None) -> List[Dict]:
    """Validated copies of the detections in a COCO results file (or list) for `coco_gt`.

    Each entry needs image_id and category_id known to the ground truth, bbox as 4 finite numbers
    [x, y, w, h] with w, h >= 0, and a finite score >= 0. An empty list is valid (everything scores
    zero) and logs a warning.
    """
    if isinstance(source, (str, os.PathLike)):
        name = name or os.fspath(source)
        data = _read_json(source, ResultsError, "results")
    else:
        name, data = name or "results", source
    if isinstance(data, dict):
        keys = ", ".join(_short(k, 30) for k in sorted(data, key=str)[:6])
        hint = (" (this looks like a ground-truth file: pass it as --gt)"
                if "annotations" in data and "images" in data else "")
        raise ResultsError(name, f"top level is an object with keys {keys}; expected a JSON "
                                 f"list of "
                                 f"detections {{image_id, category_id, bbox, score}}{hint}")
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        raise ResultsError(name, f"top level is a {type(data).__name__}; expected a JSON list of "
                                 "detections {image_id, category_id, bbox, score}")
    image_ids, cat_ids = set(coco_gt.imgs), set(coco_gt.cats)
    out = []
    for i, det in enumerate(data):
        if not isinstance(det, dict):
            raise ResultsError(name, f"is a {type(det).__name__}; expected an object "
                                     "{image_id, category_id, bbox, score}", i)
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in det:
                raise ResultsError(name, "is missing; each detection needs image_id, category_id, "
                                         "bbox [x, y, w, h] and score", i, key)
        try:
            known_image = det["image_id"] in image_ids
        except TypeError:  # unhashable
            known_image = False
        if not known_image:
            raise ResultsError(name, f"is {_short(det['image_id'])}, not an image of the "
                                     f"ground truth "
                                     f"(valid: {_describe_ids(image_ids)})", i, "image_id")
        try:
            known_cat = det["category_id"] in cat_ids
        except TypeError:
            known_cat = False
        if not known_cat:
            raise ResultsError(name, f"is {_short(det['category_id'])}, not a category of the "
                                     f"ground "
                                     f"truth (valid: {_describe_ids(cat_ids)})", i, "category_id")
        _check_box(det["bbox"], ResultsError, name, i)
        if not _is_number(det["score"]) or det["score"] < 0:
            raise ResultsError(name, f"is {_short(det['score'])}; expected a finite number >= 0 "
                                     "(a confidence)", i, "score")
        det = dict(det)
        det["bbox"] = [float(v) for v in det["bbox"]]
        det["score"] = float(det["score"])
        out.append(det)
    if not out:
        logger.warning("%s: no detections; every metric will be 0", name)
    return out


def results_to_coco(coco_gt: COCO, detections: List[Dict], iou_type: str = "bbox") -> COCO:
    """pycocotools' results object for validated detections; also for an empty list, which
    `COCO.loadRes` cannot take. For "segm", boxes are dropped so masks are what gets scored."""
    if not detections:
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                           "categories": list(coco_gt.dataset["categories"]), "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
        return coco_dt
    anns = [dict(d) for d in detections]  # loadRes writes id/area/iscrowd into each entry
    if iou_type == "segm":
        for a in anns:
            a.pop("bbox", None)
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes(anns)


def category_names(coco_gt: COCO) -> Dict[int, str]:
    """Category id → display name, sorted by id; repeated names get their id appended."""
    cats = sorted(coco_gt.cats.values(), key=lambda c: c["id"])
    names = [str(c.get("name", c["id"])) for c in cats]
    return {c["id"]: (n if names.count(n) == 1 else f"{n} (id {c['id']})")
            for c, n in zip(cats, names)}
