"""Convert Pascal VOC XML box annotations to one COCO-format json (e.g. Oxford-IIIT Pets heads).

    gn-det-voc-to-coco --xml-dir PETS/annotations/xmls \\
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

Images: with --image-dir, every image must exist, have its XML's size and decode fully (the
check training runs, gn_det.data.images.check_image). Each bad image is one line on stderr; they
end the conversion with an error, or, with --skip-bad-images, are left out of --out with their
boxes (listed in its "info" and summed up in the final warning).

Safety: `<filename>` must be a relative path inside the image folder; absolute paths, `..` and
backslashes are refused, and XML with entity declarations is refused. The only file written is
--out (atomically).
"""
import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from ..datasets.voc import _FIRST, ConversionError, collect_xml_files, convert
from ..utils.file_io import write_json
from ..utils.text import plural


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--xml-dir", required=True, type=Path, help="folder of VOC .xml files")
    p.add_argument("--out", required=True, type=Path, help="the COCO json to write")
    p.add_argument("--list", type=Path, help="split list: one image stem per line (first token)")
    p.add_argument("--label", choices=("name", "filename"), default="name",
                   help="class from <object><name>, or from the image name without _<number>")
    p.add_argument("--classes", help="comma-separated class names, in category id order "
                                     "(default: all labels found, sorted)")
    p.add_argument("--image-dir", type=Path,
                   help="check that every image exists, has its XML's size and decodes")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="with --image-dir: leave images that fail the check out (with their "
                        "boxes) instead of failing")
    p.add_argument("--skip-difficult", action="store_true", help="drop <difficult>1 objects")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip listed stems with no XML (with a warning) instead of failing")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    try:
        if opts.skip_bad_images and opts.image_dir is None:
            raise ConversionError("--skip-bad-images needs --image-dir, the folder of the images "
                                  "to check")
        xml_files, missing = collect_xml_files(opts.xml_dir, opts.list, opts.skip_missing)
        classes = ([c.strip() for c in opts.classes.split(",") if c.strip()]
                   if opts.classes else None)
        data, counts = convert(xml_files, opts.label, classes, opts.skip_difficult, opts.image_dir,
                               opts.skip_bad_images)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(str(opts.out), data, separators=(",", ":"))
    except (ConversionError, OSError) as e:
        if opts.debug or os.environ.get("GN_DET_DEBUG", "") not in ("", "0"):
            raise
        print(f"voc_to_coco: error: {e}", file=sys.stderr)
        return 2
    left_out = [d["file_name"] for d in data["info"].get("left_out_images", [])]
    named = ", ".join(left_out[:_FIRST]) + (", ..." if len(left_out) > _FIRST else "")
    notes = [(counts["clipped"], f"{plural(counts['clipped'], 'box')} clipped to the image"),
             (counts["empty"], f"{plural(counts['empty'], 'empty box')} dropped"),
             (counts["difficult"], f"{plural(counts['difficult'], 'difficult object')} skipped"),
             (len(missing), f"{plural(len(missing), 'listed image')} without XML skipped"),
             (len(left_out), f"{plural(len(left_out), 'bad image')} left out with their "
                             f"{plural(counts['bad_image_boxes'], 'box')} ({named}; all "
                             f"listed in the info of {opts.out})")]
    notes = [note for n, note in notes if n]
    if notes:
        print(f"voc_to_coco: warning: {'; '.join(notes)}", file=sys.stderr)
    cats = ", ".join(c["name"] for c in data["categories"][:10])
    more = ", ..." if len(data["categories"]) > 10 else ""
    print(f"wrote {opts.out}: {plural(len(data['images']), 'image')}, "
          f"{plural(len(data['annotations']), 'box')}, "
          f"{plural(len(data['categories']), 'class')} ({cats}{more})")
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
