"""Evaluate any detector's COCO results file: the 12 COCO stats, precision / recall / F1 at
score thresholds, best-F1 thresholds, PR curves, P/R/F1 against score, the confusion matrix and
the TIDE error breakdown at the main IoU (the first --iou) and --main-score, and per-class deploy
thresholds; or compare several result files side by side.

    python tools/evaluate.py --gt ann.json --dt results.json --out DIR \\
        [--iou 0.5 0.75] [--score 0.3 0.5] [--target-precision 0.9] [--engine pycocotools]
    python tools/evaluate.py --gt ann.json --dt a.json b.json --names bn gn --out DIR
    python tools/evaluate.py --gt ann.json --dt results.json --thresholds thresholds.json --out DIR

One file: DIR/metrics.json, metrics.csv, thresholds.json, confusion_matrix.csv and the PNGs
pr_curves.png, confusion_matrix.png, p_curve.png, r_curve.png, f1_curve.png, tide_errors.png.
Several: those of each run in DIR/<name>/ (pr_curves.png overlaid in DIR), and DIR/comparison.csv.
thresholds.json holds per class the best-F1 score, or with --target-precision the lowest score
reaching that precision (gn_det.evaluation.thresholds reads and applies it); --thresholds applies
such a file to the results first, so every number is the deployed model's. COCOeval runs on
faster-coco-eval (--engine faster, the default) or pycocotools (the reference; same numbers,
slower). Bad input ends with a one-line error and exit status 2 (--debug shows the traceback).
"""
import argparse
import logging
import os
import textwrap
import time
from collections import OrderedDict


from ..cli import run_cli
from ..evaluation import (DEFAULT_ENGINE, DEFAULT_IOU_THRESHOLDS,
                               DEFAULT_SCORE_THRESHOLDS, ENGINES, EvaluationInputError,
                               evaluate_detections, format_coco_table, format_comparison_table,
                               format_confusion_table, format_pr_table, format_tide_table,
                               load_ground_truth, load_results, write_comparison_csv,
                               write_confusion_csv, write_metrics_csv, write_metrics_json,
                               write_thresholds)
from ..evaluation.report import write_error_plots
from ..evaluation.plan import evaluation_steps
from ..evaluation.results import GroundTruthError, ResultsError, category_names
from ..evaluation.thresholds import read_thresholds, threshold_results
from ..utils.file_io import JSONFileError, read_json
from ..utils.progress import Phases

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
                    help="score threshold of the console table, the confusion matrix and the "
                         "TIDE FP/FN split (default: 0.5)")
    ap.add_argument("--target-precision", type=float, default=None,
                    help="thresholds.json: per class the lowest score whose precision reaches "
                         "this (e.g. 0.9); default: the best-F1 score")
    ap.add_argument("--thresholds", default=None, metavar="FILE",
                    help="a thresholds.json (per-class score thresholds, as this tool writes) "
                         "applied to every --dt file before evaluating: the numbers of the model "
                         "deployed with them (classes the file lacks keep all detections)")
    ap.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                    help=f"COCOeval engine (default: {DEFAULT_ENGINE}; pycocotools: the "
                         "reference, slower)")
    ap.add_argument("--max-class-panels", type=int, default=48,
                    help="per-class panels in pr_curves.png, classes with most GT first")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNGs")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    if args.target_precision is not None and not 0.0 < args.target_precision <= 1.0:
        ap.error(f"--target-precision {args.target_precision}: expected a precision in (0, 1]")
    return args


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


def _read(path: str, error_cls, what: str):
    try:
        return read_json(path, what)
    except JSONFileError as e:
        raise error_cls(e.path, e.reason) from None


def evaluate(args) -> int:
    names = run_names(args)
    thresholds = read_thresholds(args.thresholds) if args.thresholds else None
    plot = not args.no_plot
    steps = evaluation_steps(args.gt, args.dt, names, args.engine, plot)
    phases = Phases(len(steps), log=logger.info, weights=[w for _, w in steps], eta_after=0.05)
    step_names = iter(name for name, _ in steps)

    def done(detail: str = "") -> None:
        """The next step has ended: log its name (with `detail`), time and the ETA."""
        phases.done(next(step_names) + (f": {detail}" if detail else ""))

    gt_data = _read(args.gt, GroundTruthError, "annotation")
    done()
    coco_gt = load_ground_truth(gt_data, args.engine, name=args.gt)
    del gt_data
    done(f"{len(coco_gt.imgs)} images, {len(coco_gt.anns)} annotations, "
         f"{len(coco_gt.cats)} categories")
    if plot:  # the plots' cost grows with the class count, known now
        phases.weights[-1] = evaluation_steps(args.gt, args.dt, names, args.engine, plot,
                                              len(coco_gt.cats))[-1][1]
    evaluations = OrderedDict()
    for name, path in zip(names, args.dt):
        data = _read(path, ResultsError, "results")
        done()
        dets = load_results(data, coco_gt, name=path, in_place=True)
        del data
        if thresholds is not None:
            dets = threshold_results(dets, thresholds, category_names(coco_gt))
        done(f"{len(dets)} detections")
        evaluations[name] = evaluate_detections(
            coco_gt, dets, args.iou, args.score, args.main_score, progress=True,
            target_precision=args.target_precision, phase=done)
        del dets
    os.makedirs(args.out, exist_ok=True)
    metrics = OrderedDict((n, ev.metrics) for n, ev in evaluations.items())
    written, tables = [], []
    for n, ev in evaluations.items():
        run_dir = args.out if len(names) == 1 else os.path.join(args.out, n)
        os.makedirs(run_dir, exist_ok=True)
        written += [write_metrics_json(ev.metrics, os.path.join(run_dir, "metrics.json")),
                    write_metrics_csv(ev.metrics, os.path.join(run_dir, "metrics.csv")),
                    write_thresholds(ev.thresholds, os.path.join(run_dir, "thresholds.json")),
                    write_confusion_csv(ev.confusion,
                                        os.path.join(run_dir, "confusion_matrix.csv"))]
    if len(names) > 1:
        written.append(write_comparison_csv(metrics, os.path.join(args.out, "comparison.csv")))
    done()
    if plot:
        start = time.perf_counter()

        def saved(paths):  # one line per figure: no silent stretch while plotting
            logger.info("plots: %s (%.1fs so far)", ", ".join(os.path.basename(p) for p in paths),
                        time.perf_counter() - start)

        from ..evaluation.plots import plot_pr_curves  # matplotlib: only when plotting

        for n, ev in evaluations.items():
            run_dir = args.out if len(names) == 1 else os.path.join(args.out, n)
            written += write_error_plots(ev, run_dir, None if len(names) == 1 else n, saved)
        written.append(plot_pr_curves(evaluations, os.path.join(args.out, "pr_curves.png"),
                                      max_class_panels=args.max_class_panels,
                                      title=" vs ".join(names)))
        done()
    print(format_coco_table(metrics))
    print()
    if len(names) == 1:
        ev = evaluations[names[0]]
        tables = [format_pr_table(ev.metrics), format_confusion_table(ev),
                  format_tide_table(ev.metrics)]
    else:
        tables = [format_comparison_table(metrics)]
    print("\n\n".join(tables))
    print("\n" + textwrap.fill(f"wrote to {args.out}: " + ", ".join(
        os.path.relpath(p, args.out) for p in written), width=120, break_on_hyphens=False))
    return 0


def run() -> None:
    run_cli(main, "evaluate.py")


if __name__ == "__main__":
    run()
