"""Validate a COCO-format annotation file and clean what can be cleaned safely.

Structural problems (not JSON, wrong types, duplicate ids, dangling references) raise one
`DatasetError` whose one-line message names the file, the field (e.g. `annotations[17].bbox`) and
what would be valid. Degenerate boxes (NaN, inf, zero or negative size) are dropped, boxes reaching
outside their image are clipped (dropped if nothing is left), and a missing `area` is filled from
the box, so that training and COCO evaluation see the same, usable ground truth. Any JSON input
ends either in a `CleanedDataset` or a `DatasetError`; no other exception type escapes.
`gn-det-check-data annotations.json image_root/` runs the same checks by hand.
"""
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..utils.text import plural

REQUIRED_LISTS = ("images", "annotations", "categories")
_FIRST = 5  # how many offenders an error or warning lists


class DatasetError(ValueError):
    """A dataset is unusable: the message is one line naming the file, the field and the fix."""


@dataclass
class CleanedDataset:
    """A validated COCO dict, with what cleaning changed (counts and the first few offenders)."""

    data: Dict[str, Any]
    source: str
    counts: Counter = field(default_factory=Counter)
    examples: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return sum(self.counts.values()) > 0

    def note(self, kind: str, where: str):
        self.counts[kind] += 1
        self.examples.setdefault(kind, [])
        if len(self.examples[kind]) < _FIRST:
            self.examples[kind].append(where)

    def summary(self) -> str:
        """One line: what was dropped, clipped or filled, with the first offenders."""
        if not self.changed:
            return f"{self.source}: no boxes needed cleaning"
        labels = {
            "non-finite": "dropped {} with a NaN/inf bbox",
            "non-positive": "dropped {} with a zero or negative bbox width/height",
            "outside": "dropped {} whose bbox lies entirely outside its image",
            "clipped": "clipped {} to the image",
            "area": "filled {} from the bbox",
        }
        nouns = {"clipped": "bbox", "area": "missing 'area' field"}
        parts = [labels[k].format(plural(n, nouns.get(k, "annotation")))
                 + f" ({', '.join(self.examples[k])})"
                 for k, n in self.counts.items() if n]
        total = len(self.data["annotations"]) + sum(self.counts[k] for k in
                                                    ("non-finite", "non-positive", "outside"))
        return f"{self.source}: of {total} annotations, " + "; ".join(parts)


# ------------------------------------------------------------------------------ loading

def parse_json_bytes(raw: bytes, source: str) -> Any:
    """json.loads with every failure mapped to DatasetError (position, truncation, nesting)."""
    if not raw.strip():
        raise DatasetError(f"{source}: file is empty; expected a COCO JSON object "
                           "with 'images', 'annotations' and 'categories'")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        why = "truncated" if e.pos >= len(e.doc.rstrip()) else "not valid JSON"
        raise DatasetError(f"{source}: {why} at line {e.lineno} column {e.colno} ({e.msg}); "
                           "expected a COCO JSON object") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{source}: not UTF-8 text at byte {e.start}; expected a COCO JSON "
                           "file") from None
    except (ValueError, RecursionError) as e:  # e.g. a 5000-digit integer, absurd nesting
        raise DatasetError(f"{source}: not usable JSON ({type(e).__name__}: "
                           f"{str(e)[:80]}); expected a COCO JSON object") from None


# ------------------------------------------------------------------------------ field checks

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _describe(value: Any) -> str:
    """A short, safe rendering of a JSON value for an error message."""
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:4])
        return f"an object with keys [{keys}{', ...' if len(value) > 4 else ''}]"
    if isinstance(value, list):
        if len(value) <= 6 and all(type(v) in (int, float, bool, type(None)) for v in value):
            return "[" + ", ".join(_describe(v) for v in value) + "]"
        return f"an array of {len(value)} items"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
    if type(value) is int and abs(value) > 10 ** 15:
        return "a huge integer"
    return json.dumps(value)


class _Checker:
    """Field checks that raise DatasetError naming `source: where`."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str, expected: str):
        raise DatasetError(f"{self.source}: {where}: {problem}; expected {expected}")

    def obj(self, value, where: str, expected: str) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"is {_describe(value)}", expected)
        return value

    def int_id(self, entry: dict, key: str, where: str) -> int:
        if key not in entry:
            self.fail(f"{where}.{key}", "is missing", "an integer id")
        value = entry[key]
        if type(value) is not int:
            self.fail(f"{where}.{key}", f"is {_describe(value)}", "an integer id")
        return value

    def positive_int(self, entry: dict, key: str, where: str) -> int:
        value = entry.get(key)
        if type(value) is not int or value <= 0:
            problem = "is missing" if key not in entry else f"is {_describe(value)}"
            self.fail(f"{where}.{key}", problem, "a positive integer (pixels)")
        return value

    def text(self, entry: dict, key: str, where: str, expected: str) -> str:
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            problem = "is missing" if key not in entry else f"is {_describe(value)}"
            self.fail(f"{where}.{key}", problem, expected)
        return value

    def numbers(self, value, where: str, expected: str) -> List[float]:
        """A list of JSON numbers as floats (huge integers become inf, not OverflowError)."""
        if not isinstance(value, list) or any(type(v) not in (int, float) for v in value):
            self.fail(where, f"is {_describe(value)}", expected)
        return [_to_float(v) for v in value]


def _to_float(v) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _unique_ids(check: _Checker, entries: list, key: str) -> Dict[int, dict]:
    seen: Dict[int, int] = {}
    for i, entry in enumerate(entries):
        ident = check.int_id(entry, "id", f"{key}[{i}]")
        if ident in seen:
            check.fail(f"{key}[{i}].id", f"duplicates {key}[{seen[ident]}].id = {ident}",
                       f"ids unique within '{key}'")
        seen[ident] = i
    return {entry["id"]: entry for entry in entries}


# ------------------------------------------------------------------------------ the validator

def validate_coco_dict(data: Any, source: str = "<json>") -> CleanedDataset:
    """Check a parsed COCO dict and return its cleaned copy (the input is not modified)."""
    check = _Checker(source)
    if not isinstance(data, dict):
        check.fail("top level", f"is a JSON {_json_type(data)}",
                   "a JSON object with 'images', 'annotations' and 'categories' lists")
    for key in REQUIRED_LISTS:
        if key not in data:
            check.fail(key, "is missing", f"a list of {key} (COCO instances format)")
        if not isinstance(data[key], list):
            check.fail(key, f"is a JSON {_json_type(data[key])}", f"a list of {key}")
    for key in ("images", "categories"):
        if not data[key]:
            check.fail(key, "is empty", f"at least one entry in '{key}'")
        for i, entry in enumerate(data[key]):
            check.obj(entry, f"{key}[{i}]", "a JSON object")

    categories = _unique_ids(check, data["categories"], "categories")
    for i, cat in enumerate(data["categories"]):
        check.text(cat, "name", f"categories[{i}]", "a non-empty class name")
    images = _unique_ids(check, data["images"], "images")
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        check.text(img, "file_name", where, "the image's path relative to the image root")
        check.positive_int(img, "width", where)
        check.positive_int(img, "height", where)

    result = CleanedDataset(data=dict(data), source=source)
    for i, ann in enumerate(data["annotations"]):
        check.obj(ann, f"annotations[{i}]", "a JSON object")
    _unique_ids(check, data["annotations"], "annotations")
    kept = []
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        image_id = check.int_id(ann, "image_id", where)
        if image_id not in images:
            check.fail(f"{where}.image_id", f"{image_id} is not an id in 'images'",
                       "the id of a declared image")
        category_id = check.int_id(ann, "category_id", where)
        if category_id not in categories:
            known = ", ".join(str(c) for c in list(categories)[:10])
            check.fail(f"{where}.category_id", f"{category_id} is not an id in 'categories'",
                       f"one of the declared category ids ({known})")
        _check_optional_fields(check, ann, where)
        cleaned = _clean_box(check, ann, images[image_id], where, result)
        if cleaned is not None:
            kept.append(cleaned)
    result.data["annotations"] = kept
    return result


def _check_optional_fields(check: _Checker, ann: dict, where: str):
    """The optional fields detectron2's loader and pycocotools read, with their types."""
    if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):  # also True/False
        check.fail(f"{where}.iscrowd", f"is {_describe(ann['iscrowd'])}", "0 or 1")
    if ann.get("ignore", 0) not in (0, False):
        check.fail(f"{where}.ignore", f"is {_describe(ann['ignore'])}",
                   "0 or absent (detectron2 does not support 'ignore'; use iscrowd: 1)")
    if "area" in ann:
        area = ann["area"]
        if type(area) not in (int, float) or not math.isfinite(_to_float(area)) or area < 0:
            check.fail(f"{where}.area", f"is {_describe(area)}", "a finite number >= 0")
    if "segmentation" in ann:
        _check_segmentation(check, ann["segmentation"], f"{where}.segmentation")
    if "keypoints" in ann and ann["keypoints"] is not None:
        points = check.numbers(ann["keypoints"], f"{where}.keypoints",
                               "a list of numbers [x1, y1, v1, x2, y2, v2, ...]")
        if len(points) % 3 or not all(math.isfinite(p) for p in points):
            check.fail(f"{where}.keypoints", f"has {len(points)} values",
                       "finite numbers in (x, y, visibility) triples")


def _check_segmentation(check: _Checker, segm: Any, where: str):
    if isinstance(segm, list):
        for j, poly in enumerate(segm):
            coords = check.numbers(poly, f"{where}[{j}]", "a polygon [x1, y1, x2, y2, ...]")
            if not all(math.isfinite(c) for c in coords):
                check.fail(f"{where}[{j}]", "has NaN/inf coordinates", "finite polygon coordinates")
    elif isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if (not isinstance(size, list) or len(size) != 2
                or any(type(s) is not int or s <= 0 for s in size)):
            check.fail(f"{where}.size", f"is {_describe(size)}", "[height, width] of the RLE mask")
        if not (isinstance(counts, str) or (isinstance(counts, list) and
                                            all(type(c) is int and c >= 0 for c in counts))):
            check.fail(f"{where}.counts", f"is {_describe(counts)}",
                       "an RLE string or a list of non-negative run lengths")
    elif segm is not None:
        check.fail(where, f"is {_describe(segm)}", "a list of polygons or an RLE object")


def _clean_box(check: _Checker, ann: dict, image: dict, where: str,
               result: CleanedDataset) -> Optional[dict]:
    """The annotation with its bbox clipped to the image, or None when the box is degenerate."""
    if "bbox" not in ann:
        check.fail(f"{where}.bbox", "is missing", "[x, y, width, height] in pixels")
    box = check.numbers(ann["bbox"], f"{where}.bbox", "[x, y, width, height] (4 numbers)")
    if len(box) != 4:
        check.fail(f"{where}.bbox", f"has {len(box)} values", "[x, y, width, height] (4 numbers)")
    x, y, w, h = box
    if not all(math.isfinite(v) for v in box):
        result.note("non-finite", f"{where}.bbox")
        return None
    if w <= 0 or h <= 0:
        result.note("non-positive", f"{where}.bbox")
        return None
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(image["width"])), min(y + h, float(image["height"]))
    if x1 <= x0 or y1 <= y0:
        result.note("outside", f"{where}.bbox")
        return None
    ann = dict(ann)
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        result.note("clipped", f"{where}.bbox")
        ann["bbox"] = [x0, y0, x1 - x0, y1 - y0]
    if "area" not in ann:  # pycocotools' COCOeval reads it for every ground-truth box
        result.note("area", f"{where}.area")
        ann["area"] = (x1 - x0) * (y1 - y0)
    return ann


def validate_coco_file(json_file: str) -> Tuple[CleanedDataset, bytes]:
    """Load and validate one annotation file; also returns its bytes (for a content hash)."""
    try:
        with open(json_file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{json_file}: annotation file not found; expected a COCO-format "
                           ".json file (check the path in DATASETS.COCO_FORMAT)") from None
    except OSError as e:
        raise DatasetError(f"{json_file}: cannot read the annotation file "
                           f"({e.strerror or e})") from None
    return validate_coco_dict(parse_json_bytes(raw, json_file), json_file), raw
