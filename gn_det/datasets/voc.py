"""Pascal VOC XML box annotations converted to one COCO-format dataset (the voc_to_coco command,
gn_det.commands.voc_to_coco, documents the conversion's rules: coordinates, labels, image checks,
safety)."""
import math
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import List, Optional, Tuple

from ..utils.progress import track
from ..utils.text import plural

_FIRST = 5
_CHECK_THREADS = 8  # PIL decodes with the GIL released
_PROGRESS_FROM = 200  # images; fewer are checked without progress lines
_TRAILING_NUMBER = re.compile(r"_\d+$")


class ConversionError(ValueError):
    """Bad input for the converter; the message is one line naming the file and the field."""


def safe_relative_name(name: str, where: str) -> str:
    """A VOC <filename> as a safe relative path, or ConversionError (path traversal, absolute)."""
    expected = "a file name relative to the image folder, like 'Abyssinian_1.jpg'"
    if not name or not name.strip():
        raise ConversionError(f"{where}: <filename> is empty; expected {expected}")
    if "\\" in name or "\x00" in name or re.match(r"^[A-Za-z]:", name):
        raise ConversionError(f"{where}: <filename> {name!r} has a backslash, NUL or drive "
                              f"letter; expected {expected}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ConversionError(f"{where}: <filename> {name!r} points outside the image folder "
                              f"(absolute path or '..'); expected {expected}")
    return str(path)


def label_from_filename(file_name: str) -> str:
    """Pets' class from an image name: the stem without its trailing _<number>."""
    return _TRAILING_NUMBER.sub("", PurePosixPath(file_name).stem)


# ------------------------------------------------------------------------------ XML parsing

def _text(node: ET.Element, path: str, where: str) -> str:
    value = node.findtext(path)
    if value is None or not value.strip():
        raise ConversionError(f"{where}: <{path}> is missing or empty")
    return value.strip()


def _number(node: ET.Element, path: str, where: str) -> float:
    raw = _text(node, path, where)
    try:
        value = float(raw)
    except ValueError:
        raise ConversionError(f"{where}: <{path}> is {raw!r}; expected a number") from None
    if not math.isfinite(value):
        raise ConversionError(f"{where}: <{path}> is {raw!r}; expected a finite number")
    return value


def parse_voc_xml(xml_path: Path) -> dict:
    """One VOC annotation as {"file_name", "width", "height", "objects": [...]}, checked."""
    where = str(xml_path)
    try:
        raw = xml_path.read_bytes()
    except OSError as e:
        raise ConversionError(f"{where}: cannot read the XML file ({e.strerror or e})") from None
    if b"<!ENTITY" in raw:
        raise ConversionError(f"{where}: declares XML entities, which are refused (entity "
                              "expansion attacks); expected a plain VOC annotation")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        line, col = e.position
        raise ConversionError(f"{where}: malformed XML at line {line} column {col}; expected a "
                              "VOC <annotation> document") from None
    if root.tag != "annotation":
        raise ConversionError(f"{where}: root element is <{root.tag}>; expected <annotation>")
    file_name = safe_relative_name(_text(root, "filename", where), where)
    width, height = (_number(root, f"size/{k}", where) for k in ("width", "height"))
    if width <= 0 or height <= 0 or not (width.is_integer() and height.is_integer()):
        raise ConversionError(f"{where}: <size> is {width:g}x{height:g}; expected positive "
                              "integer width and height")
    objects = []
    for i, obj in enumerate(root.findall("object")):
        owhere = f"{where}: object[{i}]"
        box = tuple(_number(obj, f"bndbox/{k}", owhere) for k in ("xmin", "ymin", "xmax", "ymax"))
        difficult = obj.findtext("difficult", "0").strip()
        objects.append({"name": _text(obj, "name", owhere), "box": box,
                        "difficult": difficult not in ("", "0"), "where": owhere})
    return {"file_name": file_name, "width": int(width), "height": int(height),
            "objects": objects, "where": where}


def voc_box_to_coco(box: Tuple[float, float, float, float], width: int,
                    height: int) -> Tuple[Optional[List[float]], str]:
    """VOC (1-based inclusive) → COCO [x, y, w, h], clipped to the image.

    Returns (bbox or None, status) with status "ok", "clipped" or "empty".
    """
    xmin, ymin, xmax, ymax = box
    x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        return None, "empty"
    status = "ok" if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1) else "clipped"
    return [cx0, cy0, cx1 - cx0, cy1 - cy0], status


# ------------------------------------------------------------------------------ conversion

def read_list(list_file: Path) -> List[str]:
    """Stems from a split list (first token per line; blank lines and # comments skipped)."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{list_file}: cannot read the list file ({e})") from None
    stems = [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
    if not stems:
        raise ConversionError(f"{list_file}: lists no images; expected one image stem per line")
    for stem in stems:
        safe_relative_name(stem, str(list_file))
    return stems


def collect_xml_files(xml_dir: Path, list_file: Optional[Path],
                      skip_missing: bool) -> Tuple[List[Path], List[str]]:
    """The XML files to convert (list order, else sorted) and the listed stems with no XML."""
    if not xml_dir.is_dir():
        raise ConversionError(f"--xml-dir {xml_dir}: not a folder; expected the folder of VOC "
                              ".xml files (Pets: annotations/xmls)")
    if list_file is None:
        files = sorted(xml_dir.glob("*.xml"))
        if not files:
            raise ConversionError(f"--xml-dir {xml_dir}: has no .xml files")
        return files, []
    stems = read_list(list_file)
    files = [xml_dir / f"{s}.xml" for s in stems]
    missing = [s for s, f in zip(stems, files) if not f.is_file()]
    if missing and not skip_missing:
        raise ConversionError(f"{list_file}: {len(missing)} of {len(stems)} listed images have "
                              f"no XML in {xml_dir} (first: {', '.join(missing[:_FIRST])}); "
                              "expected one <stem>.xml per line, or pass --skip-missing")
    return [f for f in files if f.is_file()], missing


def _image_size(path: Path) -> Tuple[int, int]:
    """(width, height) as detectron2's read_image sees it (EXIF rotation applied)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        try:
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
        except Exception:  # noqa: BLE001  unreadable EXIF: detectron2 ignores it too
            pass
    return w, h


def convert(xml_files: List[Path], label: str, classes: Optional[List[str]],
            skip_difficult: bool, image_dir: Optional[Path],
            skip_bad_images: bool = False) -> Tuple[dict, Counter]:
    """Build the COCO dict; returns it with counts of dropped/clipped/skipped boxes and of the
    boxes of bad images left out ("bad_image_boxes")."""
    records = [parse_voc_xml(f) for f in xml_files]
    labels = [[(label_from_filename(r["file_name"]) if label == "filename" else o["name"])
               for o in r["objects"]] for r in records]
    if classes is not None and len(set(classes)) != len(classes):
        raise ConversionError(f"--classes {','.join(classes)}: has duplicates; expected "
                              "distinct class names")
    names = classes or sorted({name for per_image in labels for name in per_image})
    if not names:
        raise ConversionError("the XML files contain no <object>s; expected boxes to convert")
    cat_ids = {name: i + 1 for i, name in enumerate(names)}
    counts: Counter = Counter()
    left_out = []
    if image_dir is not None:
        bad = dict(bad_images(records, image_dir))
        for name, why in bad.items():
            print(f"voc_to_coco: {'left out' if skip_bad_images else 'bad image'}: "
                  f"{image_dir / name} {why}", file=sys.stderr)
        if bad and not skip_bad_images:
            raise ConversionError(
                f"--image-dir {image_dir}: {len(bad)} of {plural(len(records), 'image')} cannot "
                "be used (one line each above); replace them, or pass --skip-bad-images to leave "
                "them out")
        keep = [r["file_name"] not in bad for r in records]
        counts["bad_image_boxes"] = sum(len(r["objects"]) for r, k in zip(records, keep) if not k)
        left_out = [{"file_name": name, "problem": why} for name, why in bad.items()]
        records = [r for r, k in zip(records, keep) if k]
        labels = [x for x, k in zip(labels, keep) if k]
        if not records:
            raise ConversionError(f"--image-dir {image_dir}: none of the images can be used, so "
                                  "--skip-bad-images left nothing to convert")
    images, annotations = [], []
    for image_id, (record, image_labels) in enumerate(zip(records, labels), start=1):
        images.append({"id": image_id, "file_name": record["file_name"],
                       "width": record["width"], "height": record["height"]})
        for obj, name in zip(record["objects"], image_labels):
            if name not in cat_ids:
                raise ConversionError(f"{obj['where']}: label {name!r} is not in --classes; "
                                      f"expected one of {', '.join(names)}")
            if obj["difficult"] and skip_difficult:
                counts["difficult"] += 1
                continue
            bbox, status = voc_box_to_coco(obj["box"], record["width"], record["height"])
            counts[status] += 1
            if bbox is None:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cat_ids[name], "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})
    categories = [{"id": i, "name": n, "supercategory": "none"} for n, i in cat_ids.items()]
    info = {"description": "converted from Pascal VOC XML by datasets/voc_to_coco.py"}
    if left_out:
        info["left_out_images"] = left_out
    return {"info": info, "licenses": [], "images": images, "annotations": annotations,
            "categories": categories}, counts


def bad_images(records: List[dict], image_dir: Path) -> List[Tuple[str, str]]:
    """(file name, what is wrong) for every image of `records` that is missing, has another size
    than its XML says (as detectron2 reads it: EXIF rotation applied) or does not decode fully
    (gn_det's check_image, without its remedy: the caller gives one), in `records` order."""
    # Imported here: gn_det.data loads torch and detectron2 (seconds), which a conversion without
    # --image-dir does not need.
    from gn_det.data.images import DAMAGED_REMEDY, check_image

    def problem(record: dict) -> Optional[str]:
        path = image_dir / record["file_name"]
        if not path.is_file():
            return "is missing"
        try:
            size = _image_size(path)
        except Exception:  # noqa: BLE001  an unreadable header: check_image says what it is
            size = (record["width"], record["height"])
        if size != (record["width"], record["height"]):
            return (f"is {size[0]}x{size[1]} but its XML {record['where']} says "
                    f"{record['width']}x{record['height']}")
        why = check_image(str(path), record["width"], record["height"]).problem
        return why.replace(f"; {DAMAGED_REMEDY}", "") if why else None

    with ThreadPoolExecutor(_CHECK_THREADS) as pool:
        problems = list(track(pool.map(problem, records), len(records), "checking images",
                              "img", min_total=_PROGRESS_FROM,
                              log=lambda line: print(f"voc_to_coco: {line}", file=sys.stderr)))
    return [(r["file_name"], why) for r, why in zip(records, problems) if why]
