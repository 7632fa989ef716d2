"""Writers for an evaluation's metrics: metrics.json, metrics.csv, the side-by-side comparison of
several runs (e.g. BN vs GN), and the error-analysis files (confusion matrix, P/R/F1 against
score, the TIDE chart). Every file is written atomically with the mode a new file gets under the
user's umask (gn_det.utils.file_io). Console tables: gn_det.evaluation.tables."""
import csv
import io
import os
from typing import Callable, Dict, List, Mapping, Optional

from ..utils.file_io import atomic_write, write_json
from .confusion import write_confusion_csv
from .metrics import Evaluation, threshold_key
from .tables import (format_coco_table, format_comparison_table,  # noqa: F401  (re-exported)
                     format_confusion_table, format_pr_table, format_tide_table)

CSV_FIELDS = ["kind", "name", "iou", "score", "precision", "recall", "f1", "tp", "fp", "fn",
              "value"]


# The unit of AP (and AR, P, R, F1) in gn_det's metrics files (the evaluator's metrics.json and
# the trainer's metrics_final.json), as pycocotools computes them, and what their nulls mean.
AP_UNIT = "fraction (0-1)"
NULL_MEANS = ("undefined: e.g. the AP of a class or object size with no ground truth, or a "
              "precision with no detection kept")


def write_metrics_json(metrics: Dict, path: str) -> str:
    """metrics.json with its unit (ap_unit) and what null means (null_means): undefined stats
    are null (strict JSON, no NaN)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return write_json(path, {**metrics, "ap_unit": AP_UNIT}, indent=1, null_means=NULL_MEANS)


def write_csv(path: str, rows: List[List]) -> str:
    """`rows` (the first is the header) as a CSV file, atomically."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    atomic_write(path, lambda f: f.write(text.getvalue().encode("utf-8")))
    return path


def csv_rows(metrics: Dict) -> List[Dict]:
    """metrics.csv rows: kind "coco" (name = stat, value), "ap" (name = class, value),
    "pr" (name = class or "overall", at iou/score), "best_f1" (score = the best threshold),
    "tide_dap" (name = error type, value = the AP it costs), "tide_fp" / "tide_fn" (name =
    error type, score = the operating threshold, value = count), "threshold" (name = class,
    score = its thresholds.json threshold, with the P/R/F1 and counts it gives)."""
    rows = [{"kind": "coco", "name": k, "value": v} for k, v in metrics["coco"].items()]
    rows += [{"kind": "ap", "name": n, "iou": "0.5:0.95", "value": v}
             for n, v in metrics["ap_per_class"].items()]
    for iou, by_score in metrics["pr"].items():
        for score, at in by_score.items():
            rows.append(dict(kind="pr", name="overall", iou=iou, score=score, **at["overall"]))
            rows += [dict(kind="pr", name=n, iou=iou, score=score, **v)
                     for n, v in at["per_class"].items()]
    main_iou = threshold_key(metrics["settings"]["main_iou"])
    for n, v in list(metrics["best_f1"].items()) + [("overall", metrics["best_f1_overall"])]:
        rows.append(dict(v, kind="best_f1", name=n, iou=main_iou))
    tide = metrics.get("tide")
    if tide:
        iou = threshold_key(tide["iou"])
        rows += [{"kind": "tide_dap", "name": k, "iou": iou, "value": v}
                 for k, v in tide["dAP"].items()]
        rows += [{"kind": "tide_dap", "name": k, "iou": iou, "value": tide[f"dAP_{k}"]}
                 for k in ("all_fp", "all_fn")]
        at = tide.get("at_score")
        if at:
            for side in ("fp", "fn"):
                rows += [{"kind": f"tide_{side}", "name": k, "iou": iou,
                          "score": threshold_key(at["score"]), "value": v}
                         for k, v in at[side].items()]
    for n, v in (metrics.get("thresholds") or {}).get("classes", {}).items():
        rows.append({"kind": "threshold", "name": n, "iou": main_iou, "score": v["threshold"],
                     **{k: v[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")}})
    return rows


def write_metrics_csv(metrics: Dict, path: str) -> str:
    """metrics.csv: one row per number or per (iou, score, class) P/R entry; see csv_rows."""
    rows = [[_csv_value(row.get(k, "")) for k in CSV_FIELDS] for row in csv_rows(metrics)]
    return write_csv(path, [CSV_FIELDS] + rows)


def _csv_value(v):
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def write_comparison_csv(metrics_by_run: Mapping[str, Dict], path: str) -> str:
    """comparison.csv: the metrics.csv rows of every run side by side, one value column per run
    for each of precision/recall/f1/tp/fp/fn/value (column "<field>:<run>"). Best-F1 rows have
    score "best" and the run's best threshold as value."""
    runs = list(metrics_by_run)
    keyed = {}
    for r in runs:
        for row in csv_rows(metrics_by_run[r]):
            if row["kind"] == "best_f1":  # the best threshold differs per run: it goes to value
                row = dict(row, score="best", value=row["score"])
            key = tuple(row.get(k, "") for k in ("kind", "name", "iou", "score"))
            keyed.setdefault(key, {})[r] = row
    fields = ["precision", "recall", "f1", "tp", "fp", "fn", "value"]
    header = ["kind", "name", "iou", "score"] + [f"{f}:{r}" for f in fields for r in runs]
    rows = []
    for key, by_run in keyed.items():
        row = [_csv_value(k) for k in key]
        for field in fields:
            row += [_csv_value(by_run.get(r, {}).get(field)) for r in runs]
        rows.append(row)
    return write_csv(path, [header] + rows)


def write_error_analysis(ev: Evaluation, out_dir: str, plot: bool = True,
                         title: Optional[str] = None) -> List[str]:
    """confusion_matrix.csv in `out_dir`, and with `plot` the PNGs of write_error_plots; returns
    the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [write_confusion_csv(ev.confusion, os.path.join(out_dir, "confusion_matrix.csv"))]
    if plot:
        paths += write_error_plots(ev, out_dir, title)
    return paths


def write_error_plots(ev: Evaluation, out_dir: str, title: Optional[str] = None,
                      written: Optional[Callable[[List[str]], object]] = None) -> List[str]:
    """confusion_matrix.png, p_curve.png, r_curve.png, f1_curve.png and tide_errors.png in
    `out_dir`; returns their paths. `written(paths)` is called as each figure is saved (for
    progress lines)."""
    # matplotlib loads only when plotting: scoring alone stays light to import
    from .plots import plot_confusion_matrix, plot_score_curves, plot_tide

    note = written or (lambda paths: None)
    paths = [plot_confusion_matrix(ev.confusion, os.path.join(out_dir, "confusion_matrix.png"),
                                   title)]
    note(paths[-1:])
    paths += plot_score_curves(ev, out_dir, title)
    note(paths[-3:])
    paths.append(plot_tide(ev.metrics["tide"], os.path.join(out_dir, "tide_errors.png"), title))
    note(paths[-1:])
    return paths
