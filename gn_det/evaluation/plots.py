"""The evaluation's figures, each a PNG:

- pr_curves.png: precision–recall curves at the main IoU, overall and per class, with the
  operating points (the score thresholds) and the best-F1 point marked; several runs overlay.
  Layout: a large overall (micro) panel, with every class's curve faint behind it, then one small
  panel per class (the `max_class_panels` classes with most ground truth when there are more).
- p_curve.png, r_curve.png, f1_curve.png: precision, recall and F1 against the score threshold,
  per class and overall, best F1 marked (gn_det.evaluation.curves).
- confusion_matrix.png: the confusion matrix at the main (IoU, score), counts and row-normalized
  (gn_det.evaluation.confusion).
"""
import math
import os
from typing import List, Mapping, Optional

import numpy as np
from matplotlib.lines import Line2D

from ..utils.plotting import new_figure, palette
from .confusion import ConfusionMatrix
from .curves import score_curves
from .matching import curve
from .metrics import Evaluation, threshold_key

SCORE_CURVE_FILES = {"precision": "p_curve.png", "recall": "r_curve.png", "f1": "f1_curve.png"}
_LEGEND_CLASSES = 12  # more classes than this: thin grey lines without a legend entry each

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]


def plot_pr_curves(evaluations: Mapping[str, Evaluation], path: str,
                   max_class_panels: int = 48, title: Optional[str] = None) -> str:
    """Write the PR-curve figure of one or more runs (same ground truth) to `path` (PNG);
    `title` names what is shown (e.g. "bn vs gn")."""
    runs = list(evaluations)
    first = evaluations[runs[0]]
    colors = palette("tab10")
    num_gt = first.matches.num_gt
    order = sorted(range(len(first.class_names)), key=lambda k: (-num_gt[k], k))
    shown = order[:max_class_panels]
    cols = max(1, min(8, math.ceil(math.sqrt(len(shown) * 1.5))))
    rows = math.ceil(len(shown) / cols) if shown else 0
    width = max(12.0, 2.3 * cols)
    fig = new_figure(figsize=(width, 5.5 + 2.2 * rows), dpi=90, layout="constrained")
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=[5.0] + [2.0] * rows)

    ax = fig.add_subplot(grid[0, : max(1, cols // 2)])
    for r, name in enumerate(runs):
        ev = evaluations[name]
        if len(runs) == 1:
            for k in range(len(ev.class_names)):
                c = curve(ev.matches, ev.main_iou, k)
                ax.plot(c.recall, c.precision, color="0.8", lw=0.7, zorder=1)
        _draw_run(ax, ev, None, colors[r % 10], lw=2.0)
    ax.set_title(f"overall (all classes pooled), IoU {threshold_key(first.main_iou)}", fontsize=11)
    _style(ax, labels=True)
    handles = [Line2D([], [], color=colors[r % 10], lw=2, label=n) for r, n in enumerate(runs)]
    if len(runs) == 1:
        handles.append(Line2D([], [], color="0.8", lw=1, label="each class"))
    handles += [Line2D([], [], color="k", ls="", marker=_MARKERS[j % len(_MARKERS)],
                       mfc="white", mew=1.5, label=f"operating point: score >= {threshold_key(s)}")
                for j, s in enumerate(first.score_thresholds)]
    handles.append(Line2D([], [], color="k", ls="", marker="*", markersize=12,
                          label="best F1 (highest F1 over all scores)"))
    legend_ax = fig.add_subplot(grid[0, max(1, cols // 2):]) if cols > 1 else None
    if legend_ax is not None:
        legend_ax.axis("off")
        legend_ax.legend(handles=handles, loc="upper left", frameon=False, fontsize=10)
        legend_ax.text(0.0, 0.02, _summary(evaluations), family="monospace", fontsize=9,
                       va="bottom", transform=legend_ax.transAxes)
    else:
        ax.legend(handles=handles, loc="lower left", fontsize=8)

    for i, k in enumerate(shown):
        pax = fig.add_subplot(grid[1 + i // cols, i % cols])
        for r, name in enumerate(runs):
            _draw_run(pax, evaluations[name], k, colors[r % 10], lw=1.2, marker_size=4)
        pax.set_title(f"{first.class_names[k]} (GT {num_gt[k]})", fontsize=8)
        _style(pax, labels=False)
    hidden = len(order) - len(shown)
    heading = (f"{title}: p" if title else "P") + \
        f"recision–recall curves at IoU {threshold_key(first.main_iou)}"
    if hidden:
        heading += f" ({hidden} classes with least ground truth not shown; see metrics.csv)"
    fig.suptitle(heading, fontsize=13)
    fig.savefig(path, bbox_inches="tight")
    return path


def _draw_run(ax, ev: Evaluation, class_index: Optional[int], color, lw: float,
              marker_size: float = 7):
    """One run's curve on `ax`, with its operating points and best-F1 point."""
    c = curve(ev.matches, ev.main_iou, class_index)
    ax.plot(c.recall, c.precision, color=color, lw=lw, zorder=2)
    by_score = ev.metrics["pr"][threshold_key(ev.main_iou)]
    name = None if class_index is None else ev.class_names[class_index]
    for j, s in enumerate(ev.score_thresholds):
        at = by_score[threshold_key(s)]
        v = at["overall"] if name is None else at["per_class"][name]
        if v["tp"] + v["fp"]:  # nothing kept: no operating point to show
            ax.plot(v["recall"], v["precision"], ls="", marker=_MARKERS[j % len(_MARKERS)],
                    ms=marker_size, mfc="white", mec=color, mew=1.5, zorder=3)
    best = ev.metrics["best_f1_overall"] if name is None else ev.metrics["best_f1"][name]
    if best["score"] is not None:
        ax.plot(best["recall"], best["precision"], ls="", marker="*", ms=marker_size * 1.8,
                color=color, mec="k", mew=0.5, zorder=4)


def _style(ax, labels: bool):
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    ax.grid(True, lw=0.4, color="0.9")
    ax.tick_params(labelsize=9 if labels else 6)
    if labels:
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")


def _summary(evaluations: Mapping[str, Evaluation]) -> str:
    """Text block: per run, AP / AP50 and overall P/R/F1 at each score threshold."""
    lines = []
    for name, ev in evaluations.items():
        coco = ev.metrics["coco"]
        ap = "-" if coco["AP"] is None else f"{coco['AP']:.3f}"
        ap50 = "-" if coco["AP50"] is None else f"{coco['AP50']:.3f}"
        lines.append(f"{name}: AP {ap}  AP50 {ap50}")
        lines.append("  score    P      R      F1")
        by_score = ev.metrics["pr"][threshold_key(ev.main_iou)]
        for s in ev.score_thresholds:
            v = by_score[threshold_key(s)]["overall"]
            lines.append(f"  >={threshold_key(s):<5} {v['precision']:.3f}  {v['recall']:.3f}  "
                         f"{v['f1']:.3f}")
    return "\n".join(lines)


def plot_score_curves(ev: Evaluation, out_dir: str, title: Optional[str] = None) -> List[str]:
    """p_curve.png, r_curve.png and f1_curve.png in `out_dir`: each quantity against the score
    threshold at the main IoU, one line per class and a thick one for all classes pooled, the
    best-F1 threshold marked on each line and the main score as a dotted line. Returns the paths."""
    curves = score_curves(ev.matches, ev.main_iou, ev.class_names)
    colors = palette("tab10")
    many = len(curves) - 1 > _LEGEND_CLASSES
    top = max([1.0] + [float(c.thresholds[-1]) for c in curves if len(c.thresholds)])
    paths = []
    for index, (key, file_name) in enumerate(SCORE_CURVE_FILES.items()):
        label = {"precision": "precision", "recall": "recall", "f1": "F1"}[key]
        fig = new_figure(figsize=(8.0, 5.6), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for i, c in enumerate(curves):
            overall = c.name == "overall"
            xs = c.drawn_at(top=top)
            ys = c.at(xs)[index]
            color = "k" if overall else ("0.75" if many else colors[i % 10])
            best = c.best
            text = (f"{c.name}: best F1 {best['f1']:.3f} at {best['score']:.3g}"
                    if best["score"] is not None else f"{c.name}: F1 0 at every threshold")
            if overall:
                text = "all classes (pooled): " + text.split(": ", 1)[1]
            ax.plot(xs, ys, color=color, lw=2.6 if overall else 1.2, zorder=3 if overall else 2,
                    label=text if overall or not many else None)
            if best["score"] is not None:
                y = best["f1"] if key == "f1" else best[key]
                ax.plot(best["score"], y, ls="", marker="*", ms=15 if overall else 9,
                        color=color, mec="k", mew=0.6, zorder=4)
        ax.axvline(ev.main_score, color="0.4", ls=":", lw=1.2,
                   label=f"main score threshold {threshold_key(ev.main_score)}")
        ax.plot([], [], ls="", marker="*", ms=12, color="w", mec="k",
                label="best F1 threshold of each line")
        if many:
            ax.plot([], [], color="0.75", lw=1.2, label=f"each of {len(curves) - 1} classes")
        ax.set_xlim(0.0, top)
        ax.set_ylim(0.0, 1.02)
        ax.grid(True, lw=0.4, color="0.9")
        ax.set_xlabel("score threshold (a detection is kept when its score >= threshold)")
        ax.set_ylabel(label)
        ax.legend(loc="lower left" if key == "recall" else "best", fontsize=8)
        heading = f"{label} against score threshold, IoU {threshold_key(ev.main_iou)}"
        ax.set_title(f"{title}: {heading}" if title else heading, fontsize=11)
        path = os.path.join(out_dir, file_name)
        fig.savefig(path)
        paths.append(path)
    return paths


def plot_confusion_matrix(cm: ConfusionMatrix, path: str, title: Optional[str] = None) -> str:
    """confusion_matrix.png: counts (left) and each row divided by its sum (right: where the
    ground truth of a class went; the background row: which classes the unpaired FPs have).
    Rows are ground truth, columns predictions; the last of each is background."""
    counts = cm.matrix.astype(np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(sums > 0, counts / sums, np.nan)
    n = len(cm.labels)
    side = max(4.5, 0.55 * n + 2.5)
    fig = new_figure(figsize=(2 * side + 1.0, side + 0.8), dpi=100, layout="constrained")
    annotate = n <= 30
    for i, (values, what) in enumerate(((counts, "counts"), (normalized, "row-normalized"))):
        ax = fig.add_subplot(1, 2, i + 1)
        shown = np.ma.masked_invalid(values)
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=None if i == 0 else 1.0)
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(n), cm.labels, rotation=90 if n > 6 else 30,
                      ha="center" if n > 6 else "right", fontsize=9)
        ax.set_yticks(range(n), cm.labels, fontsize=9)
        ax.set_xlabel("predicted class (columns)")
        ax.set_ylabel("ground-truth class (rows)")
        ax.set_title(what, fontsize=11)
        if annotate:
            top = np.nanmax(values) if np.isfinite(values).any() else 1.0
            for r in range(n):
                for c in range(n):
                    v = values[r, c]
                    if r == n - 1 and c == n - 1:
                        text = "-"  # background vs background: not counted
                    elif not np.isfinite(v):
                        continue
                    else:
                        text = f"{int(v)}" if i == 0 else f"{v:.2f}"
                    ax.text(c, r, text, ha="center", va="center", fontsize=8 if n < 15 else 6,
                            color="white" if np.isfinite(v) and v > 0.6 * top else "black")
    heading = (f"Confusion matrix at IoU {threshold_key(cm.iou)}, score >= "
               f"{threshold_key(cm.score)} (rows: ground truth, columns: predicted)\n"
               "diagonal: TP;  off the diagonal: a wrong-class detection on a missed GT;  last "
               "column: missed GT with no detection on it;\nlast row: FP on no missed GT "
               "(background, duplicate, poor localization, or a wrong class on a GT already "
               "found)")
    fig.suptitle(f"{title}: {heading}" if title else heading, fontsize=11)
    fig.savefig(path)
    return path
