"""`python -m gn_det.data ANNOTATIONS.json [IMAGE_ROOT]`: run registration's checks by hand.

Prints the dataset's size and what cleaning would drop or clip; a bad dataset ends in one
`error:` line and exit status 2 (`--debug` shows the traceback).
"""
import argparse
from typing import List, Optional

from ..cli import run_cli
from .images import check_image_files
from .validate import validate_coco_file


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(prog="python -m gn_det.data",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("json_file", help="COCO-format annotation file")
    parser.add_argument("image_root", nargs="?", help="also check the image files under it")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    cleaned, _ = validate_coco_file(args.json_file)
    if args.image_root:
        check_image_files(cleaned.data["images"], args.image_root, args.json_file)
    data = cleaned.data
    print(f"{args.json_file}: OK: {len(data['images'])} images, {len(data['annotations'])} "
          f"annotations kept, {len(data['categories'])} categories"
          + ("" if args.image_root else " (image files not checked: no IMAGE_ROOT given)"))
    if cleaned.changed:
        print(f"warning: {cleaned.summary()}")


if __name__ == "__main__":
    run_cli(main, "python -m gn_det.data")
