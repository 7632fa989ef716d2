#!/usr/bin/env python
"""Evaluate any detector's COCO results file: the 12 COCO stats, precision / recall / F1 at
score thresholds, best-F1 thresholds, PR curves, P/R/F1 against score and the confusion matrix at
the main IoU (the first --iou) and --main-score; or compare several result files side by side.

    python tools/evaluate.py --gt ann.json --dt results.json --out DIR \\
        [--iou 0.5 0.75] [--score 0.3 0.5]
    python tools/evaluate.py --gt ann.json --dt a.json b.json --names bn gn --out DIR

One file: DIR/metrics.json, metrics.csv, confusion_matrix.csv and the PNGs pr_curves.png,
confusion_matrix.png, p_curve.png, r_curve.png, f1_curve.png. Several: those of each run in
DIR/<name>/ (pr_curves.png overlaid in DIR), and DIR/comparison.csv. Bad input ends with a
one-line error and exit status 2 (--debug shows the traceback).
"""
import argparse
import logging
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gn_det  # noqa: E402,F401  (compat shims before detectron2 / pycocotools users)
from gn_det.cli import run_cli  # noqa: E402
from gn_det.evaluation import (DEFAULT_IOU_THRESHOLDS, DEFAULT_SCORE_THRESHOLDS,  # noqa: E402
                               EvaluationInputError, evaluate_detections, format_coco_table,
                               format_comparison_table, format_confusion_table,
                               format_pr_table, load_ground_truth, load_results, plot_pr_curves,
                               write_comparison_csv, write_error_analysis, write_metrics_csv,
                               write_metrics_json)

logger = logging.getLogger("gn_det.evaluate")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", required=True, help="COCO annotation json (ground truth)")
    ap.add_argument("--dt", required=True, nargs="+",
                    help="COCO results json: a list of {image_id, category_id, bbox, score}; "
                         "several to compare them")
    ap.add_argument("--names", nargs="+", help="a name per --dt file (default: file names)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--iou", nargs="+", type=float, default=list(DEFAULT_IOU_THRESHOLDS),
                    help="IoU thresholds; the first is the main one (default: 0.5 0.75)")
    ap.add_argument("--score", nargs="+", type=float, default=list(DEFAULT_SCORE_THRESHOLDS),
                    help="score thresholds (operating points; default: 0.05 0.3 0.5 0.7)")
    ap.add_argument("--main-score", type=float, default=0.5,
                    help="score threshold of the console table and the confusion matrix "
                         "(default: 0.5)")
    ap.add_argument("--max-class-panels", type=int, default=48,
                    help="per-class panels in pr_curves.png, classes with most GT first")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNGs")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    return ap.parse_args(argv)


def run_names(args):
    """A unique name per results file: --names, or the file names without extension."""
    if args.names is not None:
        if len(args.names) != len(args.dt):
            raise EvaluationInputError("--names", f"{len(args.names)} names for {len(args.dt)} "
                                                  "--dt files; give one name per file")
        names = list(args.names)
    else:
        names = [os.path.splitext(os.path.basename(p))[0] for p in args.dt]
    if len(set(names)) != len(names):
        if args.names is not None:
            raise EvaluationInputError("--names", f"names must differ: {' '.join(names)}")
        names = [f"{i + 1}_{n}" for i, n in enumerate(names)]
    return names


def main(argv=None) -> int:
    """Errors in the input raise (EvaluationInputError, a ValueError, or OSError); run_cli turns
    them into one line and exit status 2."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return evaluate(args)


def evaluate(args) -> int:
    names = run_names(args)
    coco_gt = load_ground_truth(args.gt)
    logger.info("%s: %d images, %d annotations, %d categories", args.gt, len(coco_gt.imgs),
                len(coco_gt.anns), len(coco_gt.cats))
    detections = OrderedDict((n, load_results(p, coco_gt)) for n, p in zip(names, args.dt))
    evaluations = OrderedDict()
    for i, (name, dets) in enumerate(detections.items()):
        logger.info("[%d/%d] evaluating %s: %d detections", i + 1, len(names), name, len(dets))
        evaluations[name] = evaluate_detections(coco_gt, dets, args.iou, args.score,
                                                args.main_score, progress=True)
    os.makedirs(args.out, exist_ok=True)
    metrics = OrderedDict((n, ev.metrics) for n, ev in evaluations.items())
    written = []
    if len(names) == 1:
        m = metrics[names[0]]
        written += [write_metrics_json(m, os.path.join(args.out, "metrics.json")),
                    write_metrics_csv(m, os.path.join(args.out, "metrics.csv"))]
        written += write_error_analysis(evaluations[names[0]], args.out, not args.no_plot)
        print(format_coco_table(metrics))
        print()
        print(format_pr_table(m))
        print()
        print(format_confusion_table(evaluations[names[0]]))
    else:
        for n, m in metrics.items():
            run_dir = os.path.join(args.out, n)
            os.makedirs(run_dir, exist_ok=True)
            written += [write_metrics_json(m, os.path.join(run_dir, "metrics.json")),
                        write_metrics_csv(m, os.path.join(run_dir, "metrics.csv"))]
            written += write_error_analysis(evaluations[n], run_dir, not args.no_plot, title=n)
        written.append(write_comparison_csv(metrics, os.path.join(args.out, "comparison.csv")))
        print(format_coco_table(metrics))
        print()
        print(format_comparison_table(metrics))
    if not args.no_plot:
        written.append(plot_pr_curves(evaluations, os.path.join(args.out, "pr_curves.png"),
                                      max_class_panels=args.max_class_panels,
                                      title=" vs ".join(names)))
    print("\nwrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    run_cli(main, "evaluate.py")
