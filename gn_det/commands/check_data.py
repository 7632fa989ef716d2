"""`gn-det-check-data ANNOTATIONS.json [IMAGE_ROOT]`: run dataset registration's checks by hand.

Prints the dataset's size and what cleaning would drop or clip; with IMAGE_ROOT, decodes every
image fully (a progress bar with an ETA from 2000 images on; `--cache-dir` keeps the verdicts so
that a rerun decodes only new or changed files). A bad dataset ends in one `error:` line and exit
status 2 (`--debug` shows the traceback).
"""
import argparse
import time
from typing import List, Optional

from ..cli import run_cli
from ..data.images import check_image_files
from ..data.validate import validate_coco_file
from ..utils.text import plural


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(prog="check_data",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("json_file", help="COCO-format annotation file")
    parser.add_argument("image_root", nargs="?", help="also decode the image files under it")
    parser.add_argument("--cache-dir", help="keep the image verdicts here (e.g. a training run's "
                                            "OUTPUT_DIR/dataset_cache, which it then reuses)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    cleaned, _ = validate_coco_file(args.json_file)
    warnings = [cleaned.summary()] if cleaned.changed else []
    if args.image_root:
        wall, cpu = time.perf_counter(), time.process_time()
        report = check_image_files(cleaned.data["images"], args.image_root, args.json_file,
                                   cache_dir=args.cache_dir)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        warnings += [report.warning] if report.warning else []
    data = cleaned.data
    print(f"{args.json_file}: OK: {plural(len(data['images']), 'image')}, "
          f"{plural(len(data['annotations']), 'annotation')} kept, "
          f"{plural(len(data['categories']), 'category')}"
          + (", every image decoded" if args.image_root
             else " (image files not checked: no IMAGE_ROOT given)"))
    if args.image_root:
        print(f"images: {report.decoded} decoded, {report.cached} verdicts from the cache, in "
              f"{wall:.2f} s ({cpu:.2f} s CPU)")
    for warning in warnings:
        print(f"warning: {warning}")


def run() -> None:
    run_cli(main, "check_data")


if __name__ == "__main__":
    run()
