"""Console tables of an evaluation, each at most 120 characters wide whatever the class count:
the 12 COCO stats, class x P/R/F1 (with what the deploy thresholds give), the side-by-side
comparison of runs, the confusion matrix (as a table when it fits, else the top confusions as a
list; the whole matrix is in confusion_matrix.csv) and the TIDE error breakdown."""
from typing import Dict, List, Mapping, Optional

import numpy as np
from tabulate import tabulate

from .coco_stats import STAT_NAMES
from .metrics import Evaluation, threshold_key

WIDTH = 120
NAME_WIDTH = 16
TOP_CONFUSIONS = 12


def _f(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.3f}"


def _name(name: str, width: int = NAME_WIDTH) -> str:
    """A class name cut to `width` characters (with '~' where cut)."""
    return name if len(name) <= width else name[:width - 1] + "~"


def _table(rows: List[List], headers: List[str]) -> str:
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def _main(metrics: Dict):
    s = metrics["settings"]
    return s, metrics["pr"][threshold_key(s["main_iou"])][threshold_key(s["main_score"])]


def format_coco_table(metrics_by_run: Mapping[str, Dict]) -> str:
    """The 12 COCO stats, one column per run (a delta column when there are two)."""
    names = list(metrics_by_run)
    headers = ["stat"] + [_name(n, 16) for n in names] + (["delta"] if len(names) == 2 else [])
    rows = []
    for stat in STAT_NAMES:
        vals = [m["coco"][stat] for m in metrics_by_run.values()]
        row = [stat] + [_f(v) for v in vals]
        if len(names) == 2:
            row.append("-" if None in vals else f"{vals[1] - vals[0]:+.3f}")
        rows.append(row)
    return _table(rows, headers)


def format_pr_table(metrics: Dict) -> str:
    """Class x P/R/F1 with counts and AP at the main IoU and score, then the class's deploy
    threshold (thresholds.json) and the P/R/F1 it gives."""
    s, at = _main(metrics)
    thresholds = metrics.get("thresholds") or {}
    by_class = thresholds.get("classes", {})
    headers = ["class", "GT", "AP", "P", "R", "F1", "TP", "FP", "FN", "thr", "P@thr", "R@thr",
               "F1@thr"]
    rows = []
    items = list(at["per_class"].items()) + [("overall", at["overall"])]
    for n, v in items:
        gt = sum(s["num_gt"].values()) if n == "overall" else s["num_gt"][n]
        ap = metrics["coco"]["AP"] if n == "overall" else metrics["ap_per_class"][n]
        row = [_name(n), gt, _f(ap), _f(v["precision"]), _f(v["recall"]), _f(v["f1"]),
               v["tp"], v["fp"], v["fn"]]
        t = by_class.get(n)
        if t is None:
            row += ["", "", "", ""]
        elif t["threshold"] is None:
            row += ["none", "-", _f(0.0), _f(0.0)]
        else:
            row += [f"{t['threshold']:.3g}", _f(t["precision"]), _f(t["recall"]), _f(t["f1"])]
        rows.append(row)
    rule = ("best F1" if thresholds.get("rule") == "best_f1"
            else f"precision >= {thresholds.get('target_precision')}")
    title = (f"P/R/F1 at IoU {threshold_key(s['main_iou'])}, score >= "
             f"{threshold_key(s['main_score'])} (overall: summed over classes); thr: the "
             f"class's threshold\nin thresholds.json ({rule}; none: keeps nothing) and what it "
             "gives")
    return title + "\n" + _table(rows, headers)


def format_comparison_table(metrics_by_run: Mapping[str, Dict]) -> str:
    """Class x (P, R, F1 per run) at the main IoU and score of the first run."""
    runs = list(metrics_by_run)
    first = metrics_by_run[runs[0]]
    s, _ = _main(first)
    iou, score = threshold_key(s["main_iou"]), threshold_key(s["main_score"])
    headers = ["class", "GT"] + [f"{m} {_name(r, 10)}" for m in ("P", "R", "F1") for r in runs]
    rows = []
    for n in list(first["pr"][iou][score]["per_class"]) + ["overall"]:
        gt = sum(s["num_gt"].values()) if n == "overall" else s["num_gt"][n]
        vals = []
        for m in ("precision", "recall", "f1"):
            for r in runs:
                at = metrics_by_run[r]["pr"][iou][score]
                vals.append(_f((at["overall"] if n == "overall" else at["per_class"][n])[m]))
        rows.append([_name(n), gt] + vals)
    title = f"P/R/F1 at IoU {iou}, score >= {score} (overall: summed over classes)"
    return title + "\n" + _table(rows, headers)


def format_confusion_table(ev: Evaluation, width: int = WIDTH) -> str:
    """The confusion matrix as a console table (rows: ground truth, columns: predicted) when it
    fits in `width` columns, else its largest off-diagonal cells as a list."""
    cm = ev.confusion
    title = (f"Confusion matrix at IoU {threshold_key(cm.iou)}, score >= "
             f"{threshold_key(cm.score)}")
    headers = ["GT \\ predicted", *[_name(n, 12) for n in cm.labels]]
    rows = [[_name(label, 14), *row] for label, row in zip(cm.labels, cm.matrix.tolist())]
    rows[-1][-1] = "-"
    table = _table(rows, headers)
    if max(len(line) for line in table.splitlines()) <= width:
        return f"{title} (rows: ground truth, columns: predicted)\n{table}"
    return title + " (too many classes for a table: confusion_matrix.csv has it all)\n" + \
        format_top_confusions(ev)


def format_top_confusions(ev: Evaluation, top: int = TOP_CONFUSIONS) -> str:
    """The `top` largest wrong-class cells ("GT a -> predicted b: n"), then the missed GT and
    the FP on no missed GT, each with the classes that have most."""
    cm = ev.confusion
    m = cm.matrix
    k = len(cm.labels) - 1
    off = m[:k, :k].copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    lines = []
    for i in flat.tolist():
        r, c = divmod(i, k)
        if off[r, c] <= 0:
            break
        lines.append(f"  GT {cm.labels[r]} -> predicted {cm.labels[c]}: {off[r, c]} "
                     f"({off[r, c] / max(m[r].sum(), 1):.1%} of {cm.labels[r]}'s GT)")
    if not lines:
        lines.append("  no detection of a wrong class on a missed GT")
    total_wrong = int(off.sum())
    lines.insert(0, f"wrong class (a detection of another class on a missed GT): {total_wrong}"
                    + (f"; largest {len(lines)}:" if total_wrong else ""))
    for what, values in (("missed GT (no detection on it)", m[:k, k]),
                         ("FP on no missed GT (background, duplicate, poor localization)",
                          m[k, :k])):
        worst = np.argsort(-values, kind="stable")[:5]
        listed = ", ".join(f"{cm.labels[i]} {values[i]}" for i in worst.tolist() if values[i])
        lines.append(f"{what}: {int(values.sum())}" + (f" (most: {listed})" if listed else ""))
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str, width: int = WIDTH) -> str:
    """`line` cut at `width` characters (a class name list can run long)."""
    return line if len(line) <= width else line[:width - 3] + "..."


def format_tide_table(metrics: Dict) -> str:
    """The TIDE error types: the AP each costs (dAP, AP points at the TIDE IoU), how many there
    are, and the FP / FN split at the operating threshold."""
    t = metrics.get("tide")
    if not t:
        return ""
    at = t.get("at_score") or {"fp": {}, "fn": {}, "score": None}
    headers = ["error type", "dAP (AP pts)", "count", f"FP @score>={at['score']:g}"
               if at["score"] is not None else "FP", "FN"]
    rows = []
    for name, dap in t["dAP"].items():
        rows.append([name, "-" if dap is None else f"{100 * dap:.2f}", t["counts"][name],
                     at["fp"].get(name, ""), at["fn"].get(name, "")])
    rows.append(["below threshold", "", "", "", at["fn"].get("below_threshold", "")])
    for key, label in (("all_fp", "all FP (oracle)"), ("all_fn", "all FN (oracle)")):
        v = t[f"dAP_{key}"]
        rows.append([label, "-" if v is None else f"{100 * v:.2f}", "", "", ""])
    ap = "-" if t["ap"] is None else f"{100 * t['ap']:.2f}"
    title = (f"Errors by type (TIDE) at IoU {threshold_key(t['iou'])}: AP{round(100 * t['iou'])} "
             f"{ap}; dAP = AP points gained by fixing that type alone")
    return title + "\n" + _table(rows, headers)
