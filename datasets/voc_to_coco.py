#!/usr/bin/env python3
"""Convert Pascal VOC XML box annotations to one COCO-format json (e.g. Oxford-IIIT Pets heads).

    python datasets/voc_to_coco.py --xml-dir PETS/annotations/xmls \\
        --list PETS/annotations/trainval.txt --image-dir PETS/images \\
        --label filename --out datasets/pets/annotations/trainval.json

Coordinates: VOC `<bndbox>` values are 1-based, inclusive pixel indices (a box covering only the
top-left pixel is xmin=ymin=xmax=ymax=1). COCO boxes are [x, y, width, height] in continuous
coordinates where pixel i spans [i, i+1). So x = xmin - 1, y = ymin - 1, width = xmax - xmin + 1,
height = ymax - ymin + 1 (what detectron2's own VOC loader does: subtract 1 from xmin/ymin only).
Boxes are clipped to the image; boxes with nothing left are dropped; both are counted in one
warning.

Labels: `--label name` uses each object's `<name>` (Pets: cat/dog); `--label filename` uses the
image name without its trailing `_<number>` (Pets: the breed, `american_bulldog_10` → `american_
bulldog`). Category ids are 1..K in `--classes` order, else in sorted label order.

Safety: `<filename>` must be a relative path inside the image folder; absolute paths, `..` and
backslashes are refused, and XML with entity declarations is refused. The only file written is
--out (atomically).
"""
import argparse
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import List, Optional, Tuple

_FIRST = 5
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
            "objects": objects}


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
            skip_difficult: bool, image_dir: Optional[Path]) -> Tuple[dict, Counter]:
    """Build the COCO dict; returns it with counts of dropped/clipped/skipped boxes."""
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
    if image_dir is not None:
        _check_images(records, image_dir)
    counts: Counter = Counter()
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
    return {"info": {"description": "converted from Pascal VOC XML by datasets/voc_to_coco.py"},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": categories}, counts


def _check_images(records: List[dict], image_dir: Path):
    """Every image exists and has the XML's size (as detectron2 will read it)."""
    missing, wrong = [], []
    for r in records:
        path = image_dir / r["file_name"]
        if not path.is_file():
            missing.append(r["file_name"])
            continue
        try:
            size = _image_size(path)
        except Exception as e:  # noqa: BLE001  any unreadable image is reported, not raised
            wrong.append(f"{r['file_name']} unreadable ({type(e).__name__})")
            continue
        if size != (r["width"], r["height"]):
            wrong.append(f"{r['file_name']} is {size[0]}x{size[1]}, XML says "
                         f"{r['width']}x{r['height']}")
    if missing:
        raise ConversionError(f"--image-dir {image_dir}: {len(missing)} of {len(records)} images "
                              f"are missing (first: {', '.join(missing[:_FIRST])})")
    if wrong:
        raise ConversionError(f"--image-dir {image_dir}: {len(wrong)} images do not match their "
                              f"XML (first: {'; '.join(wrong[:_FIRST])})")


def write_json(data: dict, out: Path):
    """Write `out` atomically (a temp file beside it, then rename); nothing else is written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(data, indent=None, separators=(",", ":")))
    os.replace(tmp, out)


# ------------------------------------------------------------------------------ CLI

def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--xml-dir", required=True, type=Path, help="folder of VOC .xml files")
    p.add_argument("--out", required=True, type=Path, help="the COCO json to write")
    p.add_argument("--list", type=Path, help="split list: one image stem per line (first token)")
    p.add_argument("--label", choices=("name", "filename"), default="name",
                   help="class from <object><name>, or from the image name without _<number>")
    p.add_argument("--classes", help="comma-separated class names, in category id order "
                                     "(default: all labels found, sorted)")
    p.add_argument("--image-dir", type=Path, help="check images exist and match the XML sizes")
    p.add_argument("--skip-difficult", action="store_true", help="drop <difficult>1 objects")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip listed stems with no XML (with a warning) instead of failing")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    try:
        xml_files, missing = collect_xml_files(opts.xml_dir, opts.list, opts.skip_missing)
        classes = ([c.strip() for c in opts.classes.split(",") if c.strip()]
                   if opts.classes else None)
        data, counts = convert(xml_files, opts.label, classes, opts.skip_difficult, opts.image_dir)
        write_json(data, opts.out)
    except (ConversionError, OSError) as e:
        if opts.debug or os.environ.get("GN_DET_DEBUG", "") not in ("", "0"):
            raise
        print(f"voc_to_coco: error: {e}", file=sys.stderr)
        return 2
    notes = [f"{n} {what}" for what, n in (("boxes clipped to their image", counts["clipped"]),
                                          ("empty boxes dropped", counts["empty"]),
                                          ("difficult objects skipped", counts["difficult"]),
                                          ("listed images without XML skipped", len(missing)))
             if n]
    if notes:
        print(f"voc_to_coco: warning: {'; '.join(notes)}", file=sys.stderr)
    cats = ", ".join(c["name"] for c in data["categories"][:10])
    more = ", ..." if len(data["categories"]) > 10 else ""
    print(f"wrote {opts.out}: {len(data['images'])} images, {len(data['annotations'])} boxes, "
          f"{len(data['categories'])} classes ({cats}{more})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
