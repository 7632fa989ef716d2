"""Load and validate COCO ground truth and detection results before the COCOeval engine sees them.

pycocotools and faster-coco-eval report bad input with bare asserts or KeyErrors deep inside
COCOeval; here every problem is one exception naming the file, the entry index, the field and what
would be valid: `GroundTruthError` for the annotation file, `ResultsError` for a results file.
Both are `EvaluationInputError`, a ValueError.

A results file of COCO size (500,000 detections) is checked with numpy in one pass; only when that
pass finds a problem are the entries walked one by one, to name the first bad one.
"""
import itertools
import logging
import math
import os
from numbers import Integral, Real
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from ..utils.file_io import JSONFileError, read_json
from .engine import DEFAULT_ENGINE, check_engine, make_coco, results_coco

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


def load_ground_truth(source: Source, engine: str = DEFAULT_ENGINE, name: Optional[str] = None):
    """The COCO object of `engine` (gn_det.evaluation.engine) for a COCO annotation file (or
    dict), validated and normalized.

    Fills what COCOeval needs but COCO files often omit: `iscrowd` (0) and `area` (box area).
    Annotation ids that COCOeval cannot use (missing, 0, or repeated: it marks a match to id 0 as
    no match) are renumbered 1..N with a warning; nothing else refers to them in box evaluation.
    faster-coco-eval needs integer image ids (as COCO's format has them); other ids are refused
    in one line that names pycocotools, which takes any.
    """
    check_engine(engine)
    if isinstance(source, (str, os.PathLike)):
        name = name or os.fspath(source)
        data = _read_json(source, GroundTruthError, "annotation")
    else:
        name, data = name or "ground truth", source
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
        if engine == "faster" and (not isinstance(img["id"], Integral) or isinstance(img["id"],
                                                                                     bool)):
            raise GroundTruthError(name, f"image id {_short(img['id'])} is not an integer; the "
                                         "faster-coco-eval engine needs integer image ids (use "
                                         "--engine pycocotools for others)", i, "images")
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
    return make_coco(dict(data, annotations=annotations), engine)


class Detections(list):
    """A list of validated detection dicts, with their fields as numpy arrays (`columns`: image_id,
    category_id [N] as given, score [N], bbox [N, 4]) for the vectorized steps. The arrays are
    those of the list when it was made; build a new Detections after changing entries."""

    def __init__(self, items: Iterable = (), columns: Optional[Dict[str, np.ndarray]] = None):
        super().__init__(items)
        self._columns = columns

    @property
    def columns(self) -> Dict[str, np.ndarray]:
        if self._columns is None or len(self._columns["score"]) != len(self):
            self._columns = detection_columns(self)
        return self._columns


def detection_columns(detections: Sequence[Dict]) -> Dict[str, np.ndarray]:
    """image_id, category_id, score [N] and bbox [N, 4] of validated detections."""
    n = len(detections)
    return {"image_id": _ids([d["image_id"] for d in detections]),
            "category_id": _ids([d["category_id"] for d in detections]),
            "score": np.fromiter((d["score"] for d in detections), np.float64, n),
            "bbox": np.asarray([d["bbox"] for d in detections], np.float64).reshape(n, 4)}


def _ids(values: List) -> np.ndarray:
    """Ids as int64, or an object array when they are not all integers (pycocotools takes string
    image ids)."""
    if set(map(type, values)) <= {int}:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def load_results(source: Source, coco_gt, name: Optional[str] = None,
                 in_place: bool = False) -> "Detections":
    """Validated detections of a COCO results file (or list) for `coco_gt`: `bbox` a list of 4
    floats, `score` a float.

    Each entry needs image_id and category_id known to the ground truth, bbox as 4 finite numbers
    [x, y, w, h] with w, h >= 0, and a finite score >= 0. An empty list is valid (everything scores
    zero) and logs a warning. A list passed in is not changed (its entries are copied) unless
    `in_place`; the entries of a file read here are normalized in place.
    """
    if isinstance(source, (str, os.PathLike)):
        name = name or os.fspath(source)
        data = _read_json(source, ResultsError, "results")
        owned = True
    else:
        name, data, owned = name or "results", source, in_place
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
    out = _checked_fast(data, image_ids, cat_ids, owned)
    if out is None:
        out = Detections(_checked_entry(det, i, name, image_ids, cat_ids)
                         for i, det in enumerate(data))
    if not out:
        logger.warning("%s: no detections; every metric will be 0", name)
    return out


_DET_KEYS = ("image_id", "category_id", "bbox", "score")


def _checked_fast(data: Sequence, image_ids: set, cat_ids: set, owned: bool
                  ) -> Optional["Detections"]:
    """The normalized detections when every entry is valid (checked with numpy: what
    _checked_entry accepts, no more), else None (then _checked_entry names the first bad one)."""
    if not all(type(d) is dict for d in data):
        return None
    try:
        columns = [[d[k] for d in data] for k in _DET_KEYS]
        if not (set(columns[0]) <= image_ids and set(columns[1]) <= cat_ids):
            return None
    except (KeyError, TypeError):  # a key missing, an unhashable id
        return None
    boxes, scores = columns[2], columns[3]
    if not set(map(type, boxes)) <= {list, tuple} or not set(map(len, boxes)) <= {4}:
        return None
    box_types = set(map(type, itertools.chain.from_iterable(boxes)))
    score_types = set(map(type, scores))
    if not (box_types <= {float, int} and score_types <= {float, int}):
        return None
    try:
        b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        s = np.array(scores, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        return None
    if not (np.isfinite(b).all() and np.isfinite(s).all() and (b[:, 2:] >= 0).all()
            and (s >= 0).all()):
        return None
    out = data if owned else [dict(d) for d in data]
    if box_types != {float} or set(map(type, boxes)) != {list}:
        for d, row in zip(out, b.tolist()):
            d["bbox"] = row
    if score_types != {float}:
        for d, v in zip(out, s.tolist()):
            d["score"] = v
    columns = {"image_id": _ids(columns[0]), "category_id": _ids(columns[1]), "score": s,
               "bbox": b}
    return Detections(out, columns)


def _checked_entry(det, i: int, name: str, image_ids: set, cat_ids: set) -> Dict:
    """A normalized copy of detection `i`, or ResultsError naming what is wrong with it."""
    if not isinstance(det, dict):
        raise ResultsError(name, f"is a {type(det).__name__}; expected an object "
                                 "{image_id, category_id, bbox, score}", i)
    for key in _DET_KEYS:
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
    return det


def results_to_coco(coco_gt, detections: List[Dict], iou_type: str = "bbox"):
    """The engine's results COCO for validated detections (load_results' list, whose dicts it
    numbers), also for an empty list; for "segm", boxes are dropped so masks are what gets
    scored (gn_det.evaluation.engine.results_coco)."""
    return results_coco(coco_gt, detections, iou_type)


def category_names(coco_gt) -> Dict[int, str]:
    """Category id → display name, sorted by id; repeated names get their id appended."""
    cats = sorted(coco_gt.cats.values(), key=lambda c: c["id"])
    names = [str(c.get("name", c["id"])) for c in cats]
    return {c["id"]: (n if names.count(n) == 1 else f"{n} (id {c['id']})")
            for c, n in zip(cats, names)}
