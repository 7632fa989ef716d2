"""Show where a detector fails: the images with most errors at the operating threshold, GT and
detections coloured TP / FP / FN, each FP labelled with its kind (wrong class, duplicate, poor
localization, background), for any detector's COCO results file.

    python tools/show_errors.py --gt ann.json --dt results.json --image-root IMAGES --out DIR \\
        [--iou 0.5] [--score 0.5] [--num 16] [--thresholds thresholds.json]

Writes DIR/NNN_<image>.png for the --num worst images (most FP + FN), DIR/contact_sheet.png,
DIR/image_errors.csv and DIR/image_errors.json (counts per image, worst first, and the totals).
The kinds come from the same COCOeval matches as tools/evaluate.py's P/R (precedence:
gn_det.evaluation.errors). Bad input ends with a one-line error and exit status 2 (--debug shows
the traceback).
"""
import argparse
import logging
import os


from ..cli import run_cli
from ..evaluation import (EvaluationInputError, evaluate_detections,
                               format_confusion_table, load_ground_truth, load_results)
from ..evaluation.errors import (image_errors, totals, worst_images,
                                      write_image_errors)
from ..evaluation.results import category_names
from ..evaluation.thresholds import read_thresholds, threshold_results
from ..utils.text import plural
from ..visualize import write_error_images

logger = logging.getLogger("gn_det.show_errors")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="show_errors", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", required=True, help="COCO annotation json (ground truth)")
    ap.add_argument("--dt", required=True,
                    help="COCO results json: a list of {image_id, category_id, bbox, score}")
    ap.add_argument("--image-root", required=True,
                    help="folder the 'file_name' fields of --gt are relative to")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default: 0.5)")
    ap.add_argument("--score", type=float, default=0.5,
                    help="score threshold: detections with score >= it are shown (default: 0.5)")
    ap.add_argument("--thresholds", default=None, metavar="FILE",
                    help="a thresholds.json (per-class score thresholds) applied to --dt first: "
                         "the errors of the model deployed with them")
    ap.add_argument("--num", type=int, default=16,
                    help="how many of the worst images to draw (default: 16; 0: none)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    if args.num < 0:
        ap.error(f"--num {args.num}: expected 0 or more")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not os.path.isdir(args.image_root):
        raise EvaluationInputError("--image-root", f"{args.image_root} is not a folder; expected "
                                                   "the folder the 'file_name' fields of --gt "
                                                   "are relative to")
    thresholds = read_thresholds(args.thresholds) if args.thresholds else None
    coco_gt = load_ground_truth(args.gt)
    detections = load_results(args.dt, coco_gt)
    if thresholds is not None:
        detections = threshold_results(detections, thresholds, category_names(coco_gt))
    ev = evaluate_detections(coco_gt, detections, [args.iou], [args.score], args.score,
                             progress=True)
    errors = image_errors(ev)
    worst = worst_images(errors, args.num)
    os.makedirs(args.out, exist_ok=True)
    written = write_error_images(worst, args.image_root, args.out, ev.class_names, args.gt,
                                 args.iou, args.score) if args.num else []
    settings = {"gt": args.gt, "dt": args.dt, "iou": args.iou, "score": args.score,
                "thresholds": args.thresholds,
                "kept": "score >= threshold", "max_dets": ev.matches.max_dets}
    csv_path, json_path = (os.path.join(args.out, f"image_errors.{x}") for x in ("csv", "json"))
    write_image_errors(errors, csv_path, json_path, settings)
    t = totals(errors)
    print(f"{plural(len(errors), 'image')}, IoU {args.iou:g}, score >= {args.score:g}: "
          f"TP {t['tp']}, FP {t['fp']} (wrong class {t['fp_wrong_class']}, "
          f"duplicate {t['fp_duplicate']}, poor localization {t['fp_poor_localization']}, "
          f"background {t['fp_background']}), FN {t['fn']}")
    print()
    print(format_confusion_table(ev))
    drawn = f"{plural(len(written) - 1, 'image')} and contact_sheet.png, " if written else ""
    print(f"\nwrote {drawn}image_errors.csv and image_errors.json to {args.out}")
    return 0


def run() -> None:
    run_cli(main, "show_errors")


if __name__ == "__main__":
    run()
