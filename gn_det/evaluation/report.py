"""Writers for an evaluation's metrics: metrics.json, metrics.csv, the console tables, the
side-by-side comparison of several runs (e.g. BN vs GN), and the error-analysis files
(confusion matrix, P/R/F1 against score)."""
import csv
import json
import os
from typing import Dict, List, Mapping, Optional

from tabulate import tabulate

from .coco_stats import STAT_NAMES
from .confusion import write_confusion_csv
from .metrics import Evaluation, threshold_key
from .plots import plot_confusion_matrix, plot_score_curves

CSV_FIELDS = ["kind", "name", "iou", "score", "precision", "recall", "f1", "tp", "fp", "fn",
              "value"]


def write_metrics_json(metrics: Dict, path: str) -> str:
    """metrics.json; undefined stats are null (strict JSON, no NaN)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1, allow_nan=False)
        f.write("\n")
    return path


def csv_rows(metrics: Dict) -> List[Dict]:
    """metrics.csv rows: kind "coco" (name = stat, value), "ap" (name = class, value),
    "pr" (name = class or "overall", at iou/score), "best_f1" (score = the best threshold)."""
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
    return rows


def write_metrics_csv(metrics: Dict, path: str) -> str:
    """metrics.csv: one row per number or per (iou, score, class) P/R entry; see csv_rows."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        for row in csv_rows(metrics):
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return path


def _csv_value(v):
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def _f(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3f}"


def _main(metrics: Dict):
    s = metrics["settings"]
    return s, metrics["pr"][threshold_key(s["main_iou"])][threshold_key(s["main_score"])]


def format_coco_table(metrics_by_run: Mapping[str, Dict]) -> str:
    """The 12 COCO stats, one column per run (a delta column when there are two)."""
    names = list(metrics_by_run)
    headers = ["stat"] + names + (["delta"] if len(names) == 2 else [])
    rows = []
    for stat in STAT_NAMES:
        vals = [m["coco"][stat] for m in metrics_by_run.values()]
        row = [stat] + [_f(v) for v in vals]
        if len(names) == 2:
            row.append("-" if None in vals else f"{vals[1] - vals[0]:+.3f}")
        rows.append(row)
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def format_pr_table(metrics: Dict) -> str:
    """Class × P/R/F1 (with counts, AP and the best-F1 threshold) at the main IoU and score."""
    s, at = _main(metrics)
    headers = ["class", "GT", "P", "R", "F1", "TP", "FP", "FN", "AP", "best F1 @score"]
    rows = []
    items = list(at["per_class"].items()) + [("overall", at["overall"])]
    for n, v in items:
        best = metrics["best_f1_overall"] if n == "overall" else metrics["best_f1"][n]
        gt = sum(s["num_gt"].values()) if n == "overall" else s["num_gt"][n]
        ap = metrics["coco"]["AP"] if n == "overall" else metrics["ap_per_class"][n]
        at_score = "-" if best["score"] is None else f"{best['f1']:.3f} @{best['score']:.3g}"
        rows.append([n, gt, _f(v["precision"]), _f(v["recall"]), _f(v["f1"]),
                     v["tp"], v["fp"], v["fn"], _f(ap), at_score])
    title = (f"P/R/F1 at IoU {threshold_key(s['main_iou'])}, score >= "
             f"{threshold_key(s['main_score'])} (overall: summed over classes)")
    return title + "\n" + tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def format_comparison_table(metrics_by_run: Mapping[str, Dict]) -> str:
    """Class × (P, R, F1 per run) at the main IoU and score of the first run."""
    runs = list(metrics_by_run)
    first = metrics_by_run[runs[0]]
    s, _ = _main(first)
    iou, score = threshold_key(s["main_iou"]), threshold_key(s["main_score"])
    headers = ["class", "GT"] + [f"{m} {r}" for m in ("P", "R", "F1") for r in runs]
    rows = []
    for n in list(first["pr"][iou][score]["per_class"]) + ["overall"]:
        gt = sum(s["num_gt"].values()) if n == "overall" else s["num_gt"][n]
        vals = []
        for m in ("precision", "recall", "f1"):
            for r in runs:
                at = metrics_by_run[r]["pr"][iou][score]
                vals.append(_f((at["overall"] if n == "overall" else at["per_class"][n])[m]))
        rows.append([n, gt] + vals)
    title = f"P/R/F1 at IoU {iou}, score >= {score} (overall: summed over classes)"
    return title + "\n" + tabulate(rows, headers, tablefmt="github", disable_numparse=True)


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
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for key, by_run in keyed.items():
            row = list(key)
            for field in fields:
                row += [_csv_value(by_run.get(r, {}).get(field)) for r in runs]
            writer.writerow(row)
    return path


def write_error_analysis(ev: Evaluation, out_dir: str, plot: bool = True,
                         title: Optional[str] = None) -> List[str]:
    """confusion_matrix.csv in `out_dir`, and with `plot` confusion_matrix.png, p_curve.png,
    r_curve.png and f1_curve.png; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [write_confusion_csv(ev.confusion, os.path.join(out_dir, "confusion_matrix.csv"))]
    if plot:
        paths.append(plot_confusion_matrix(ev.confusion,
                                           os.path.join(out_dir, "confusion_matrix.png"), title))
        paths += plot_score_curves(ev, out_dir, title)
    return paths


def format_confusion_table(ev: Evaluation) -> str:
    """The confusion matrix as a console table (rows: ground truth, columns: predicted)."""
    cm = ev.confusion
    headers = ["GT \\ predicted", *cm.labels]
    rows = [[label, *row] for label, row in zip(cm.labels, cm.matrix.tolist())]
    rows[-1][-1] = "-"
    title = (f"Confusion matrix at IoU {threshold_key(cm.iou)}, score >= "
             f"{threshold_key(cm.score)} (rows: ground truth, columns: predicted)")
    return title + "\n" + tabulate(rows, headers, tablefmt="github", disable_numparse=True)
