"""pr_curves.png: precision–recall curves at the main IoU, overall and per class, with the
operating points (the score thresholds) and the best-F1 point marked; several runs overlay.

Layout: a large overall (micro) panel, with every class's curve faint behind it, then one small
panel per class (the `max_class_panels` classes with most ground truth when there are more).
"""
import math
from typing import Mapping, Optional

from matplotlib.lines import Line2D

from ..utils.plotting import new_figure, palette
from .matching import curve
from .metrics import Evaluation, threshold_key

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
