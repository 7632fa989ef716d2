"""The evaluation's figures, each a PNG:

- pr_curves.png: precision–recall curves at the main IoU, overall and per class, with the
  operating points (the score thresholds) and the best-F1 point marked; several runs overlay.
  Layout: a large overall (micro) panel, with every class's curve faint behind it, then one small
  panel per class (the `max_class_panels` classes with most ground truth when there are more).
- p_curve.png, r_curve.png, f1_curve.png: precision, recall and F1 against the score threshold,
  per class and overall, best F1 marked (gn_det.evaluation.curves).
- confusion_matrix.png: the confusion matrix at the main (IoU, score), counts and row-normalized
  (gn_det.evaluation.confusion); with many classes, the ones with most confusion (the rest
  summed into "other classes"; confusion_matrix.csv has every class). At most 3,000 px a side.
- tide_errors.png: the AP each TIDE error type costs, and the FP / FN at the operating threshold
  by type (gn_det.evaluation.tide).
"""
import math
import os
from typing import Dict, List, Mapping, Optional

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from ..utils.file_io import atomic_write
from ..utils.plotting import new_figure, palette
from .confusion import BACKGROUND, ConfusionMatrix
from .curves import score_curves
from .matching import curve
from .metrics import Evaluation, threshold_key

SCORE_CURVE_FILES = {"precision": "p_curve.png", "recall": "r_curve.png", "f1": "f1_curve.png"}
_LEGEND_CLASSES = 12  # more classes than this: thin grey lines without a legend entry each

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]
CONFUSION_CLASSES = 20  # more classes than this: the most confused ones, the rest as "other"
MAX_SIDE_PX = 3000
OTHER = "other classes"


def plot_pr_curves(evaluations: Mapping[str, Evaluation], path: str,
                   max_class_panels: int = 48, title: Optional[str] = None) -> str:
    """Write the PR-curve figure of one or more runs (same ground truth) to `path` (PNG);
    `title` names what is shown (e.g. "bn vs gn"). The per-class panels are tiles of one axes
    (each tile: recall 0-1 across, precision 0-1 up), drawn in one pass."""
    runs = list(evaluations)
    first = evaluations[runs[0]]
    colors = palette("tab10")
    num_gt = first.matches.num_gt
    order = sorted(range(len(first.class_names)), key=lambda k: (-num_gt[k], k))
    shown = order[:max_class_panels]
    cols = max(1, min(8, math.ceil(math.sqrt(len(shown) * 1.5))))
    rows = math.ceil(len(shown) / cols) if shown else 0
    width, height = max(12.0, 2.3 * cols), 5.6 + 2.2 * rows  # inches: overall panel, tiles
    fig = new_figure(figsize=(width, height), dpi=90)
    ax = fig.add_axes([0.7 / width, (height - 5.1) / height, 0.42, 4.2 / height])
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
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.52, (height - 0.8) / height),
               frameon=False, fontsize=10)
    fig.text(0.52, (height - 5.0) / height, _summary(evaluations), family="monospace",
             fontsize=9, va="bottom")
    if shown:
        tiles = fig.add_axes([0.02, 0.15 / height, 0.96, (height - 6.0) / height])
        _draw_tiles(tiles, evaluations, shown, cols, colors)
    hidden = len(order) - len(shown)
    heading = (f"{title}: p" if title else "P") + \
        f"recision–recall curves at IoU {threshold_key(first.main_iou)}"
    if hidden:
        heading += f" ({hidden} classes with least ground truth not shown; see metrics.csv)"
    fig.suptitle(heading, fontsize=13)
    save_png(fig, path)
    return path


def save_png(fig, path: str) -> str:
    """`fig` as a PNG at `path`, atomically, with fast compression (zlib level 1: a third of the
    encoding time of the default, files ~1.3x larger)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", pil_kwargs={"compress_level": 1}))
    return path


def _draw_tiles(ax, evaluations: Mapping[str, Evaluation], shown: List[int], cols: int, colors):
    """One tile per class in `shown` on `ax`: its PR curve per run with the operating and best-F1
    points, in a unit square (recall across, precision up) with a light frame and grid."""
    first = evaluations[next(iter(evaluations))]
    gap_x, gap_y = 0.25, 0.45
    rows = math.ceil(len(shown) / cols)
    frames, markers = [], {}
    for i, k in enumerate(shown):
        x0, y0 = (i % cols) * (1 + gap_x), (rows - 1 - i // cols) * (1 + gap_y)
        frames.append([(x0, y0), (x0 + 1, y0), (x0 + 1, y0 + 1.05), (x0, y0 + 1.05),
                       (x0, y0)])
        for g in (0.5,):
            frames.append([(x0 + g, y0), (x0 + g, y0 + 1.05)])
            frames.append([(x0, y0 + g), (x0 + 1, y0 + g)])
        for r, ev in enumerate(evaluations.values()):
            _draw_run(ax, ev, k, colors[r % 10], lw=1.2, marker_size=4, offset=(x0, y0),
                      markers=markers)
        ax.text(x0 + 0.5, y0 + 1.1, f"{first.class_names[k]} (GT {first.matches.num_gt[k]})",
                ha="center", va="bottom", fontsize=8)
    _draw_markers(ax, markers)
    ax.add_collection(LineCollection(frames, colors="0.8", linewidths=0.5, zorder=0))
    ax.set_xlim(-0.05, cols * (1 + gap_x) - gap_x + 0.05)
    ax.set_ylim(-0.05, rows * (1 + gap_y) - gap_y + 0.15)
    ax.axis("off")
    ax.text(0.0, -0.04, "each panel: recall 0-1 across, precision 0-1 up (grid at 0.5)",
            fontsize=8, va="top", color="0.3")


def _draw_run(ax, ev: Evaluation, class_index: Optional[int], color, lw: float,
              marker_size: float = 7, offset=(0.0, 0.0), markers: Optional[Dict] = None):
    """One run's curve on `ax` (shifted by `offset`), with its operating points and best-F1
    point; into `markers` ({(marker, color, size): [(x, y)]}) when given, for the caller to draw
    each kind in one artist."""
    c = curve(ev.matches, ev.main_iou, class_index)
    dx, dy = offset
    ax.plot(c.recall + dx, c.precision + dy, color=color, lw=lw, zorder=2)
    own = {} if markers is None else markers
    by_score = ev.metrics["pr"][threshold_key(ev.main_iou)]
    name = None if class_index is None else ev.class_names[class_index]
    for j, s in enumerate(ev.score_thresholds):
        at = by_score[threshold_key(s)]
        v = at["overall"] if name is None else at["per_class"][name]
        if v["tp"] + v["fp"]:  # nothing kept: no operating point to show
            own.setdefault((_MARKERS[j % len(_MARKERS)], color, marker_size), []).append(
                (v["recall"] + dx, v["precision"] + dy))
    best = ev.metrics["best_f1_overall"] if name is None else ev.metrics["best_f1"][name]
    if best["score"] is not None:
        own.setdefault(("*", color, marker_size * 1.8), []).append(
            (best["recall"] + dx, best["precision"] + dy))
    if markers is None:
        _draw_markers(ax, own)


def _draw_markers(ax, markers: Dict) -> None:
    """The points collected by _draw_run, one Line2D per (marker, color, size)."""
    for (marker, color, size), points in markers.items():
        xs, ys = zip(*points)
        if marker == "*":
            ax.plot(xs, ys, ls="", marker="*", ms=size, color=color, mec="k", mew=0.5,
                    zorder=4)
        else:
            ax.plot(xs, ys, ls="", marker=marker, ms=size, mfc="white", mec=color, mew=1.5,
                    zorder=3)


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
    best-F1 threshold marked on each line and the main score as a dotted line. Returns the paths.
    With many classes, the class lines are grey and drawn on a 600-point grid (one artist)."""
    curves = score_curves(ev.matches, ev.main_iou, ev.class_names)
    colors = palette("tab10")
    many = len(curves) - 1 > _LEGEND_CLASSES
    top = max([1.0] + [float(c.thresholds[-1]) for c in curves if len(c.thresholds)])
    grid = np.linspace(0.0, top, 600)
    drawn = []
    for c in curves:
        xs = grid if many and c.name != "overall" else c.drawn_at(top=top)
        drawn.append((xs, c.at(xs)))
    paths = []
    for index, (key, file_name) in enumerate(SCORE_CURVE_FILES.items()):
        label = {"precision": "precision", "recall": "recall", "f1": "F1"}[key]
        fig = new_figure(figsize=(8.0, 5.6), dpi=100)
        fig.subplots_adjust(left=0.09, right=0.97, bottom=0.1, top=0.93)
        ax = fig.add_subplot()
        if many:
            lines = [np.column_stack([xs, ys[index]]) for c, (xs, ys) in zip(curves, drawn)
                     if c.name != "overall"]
            ax.add_collection(LineCollection([ln[np.isfinite(ln[:, 1])] for ln in lines],
                                             colors="0.75", linewidths=1.0, zorder=2))
        stars = []
        for i, (c, (xs, ys)) in enumerate(zip(curves, drawn)):
            overall = c.name == "overall"
            color = "k" if overall else ("0.75" if many else colors[i % 10])
            best = c.best
            text = (f"{c.name}: best F1 {best['f1']:.3f} at {best['score']:.3g}"
                    if best["score"] is not None else f"{c.name}: F1 0 at every threshold")
            if overall:
                text = "all classes (pooled): " + text.split(": ", 1)[1]
            if overall or not many:
                ax.plot(xs, ys[index], color=color, lw=2.6 if overall else 1.2,
                        zorder=3 if overall else 2, label=text)
            if best["score"] is not None:
                y = best["f1"] if key == "f1" else best[key]
                stars.append((best["score"], y, 15 if overall else 9, color))
        for size in {st[2] for st in stars}:  # one artist per marker size
            mine = [st for st in stars if st[2] == size]
            ax.scatter([st[0] for st in mine], [st[1] for st in mine], marker="*",
                       s=size ** 2, c=[st[3] for st in mine], edgecolors="k",
                       linewidths=0.6, zorder=4)
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
        # a fixed corner: "best" would search every line's points
        ax.legend(loc="lower left" if key != "precision" else "upper left", fontsize=8)
        heading = f"{label} against score threshold, IoU {threshold_key(ev.main_iou)}"
        ax.set_title(f"{title}: {heading}" if title else heading, fontsize=11)
        path = os.path.join(out_dir, file_name)
        save_png(fig, path)
        paths.append(path)
    return paths


def confusion_shown(cm: ConfusionMatrix, max_classes: int = CONFUSION_CLASSES):
    """(labels, matrix) to draw: every class when there are at most `max_classes`, else the
    `max_classes` classes with most errors (wrong-class cells in their row and column, then
    missed GT and FP), the others summed into one "other classes" row and column; background
    stays last."""
    k = len(cm.labels) - 1
    if k <= max_classes:
        return list(cm.labels), cm.matrix
    m = cm.matrix
    off = m[:k, :k] - np.diag(np.diag(m[:k, :k]))
    errors = m[:k, k] + m[k, :k]
    rank = np.lexsort((np.arange(k), -errors, -(off.sum(axis=0) + off.sum(axis=1))))
    keep = np.sort(rank[:max_classes])
    group = np.full(k + 1, max_classes, np.int64)  # omitted classes -> "other"
    group[keep] = np.arange(max_classes)
    group[k] = max_classes + 1                     # background
    out = np.zeros((max_classes + 2, max_classes + 2), np.int64)
    np.add.at(out, (group[:, None], group[None, :]), m)
    labels = [cm.labels[i] for i in keep.tolist()] + [OTHER, BACKGROUND]
    return labels, out


def plot_confusion_matrix(cm: ConfusionMatrix, path: str, title: Optional[str] = None) -> str:
    """confusion_matrix.png: counts (left) and each row divided by its sum (right: where the
    ground truth of a class went; the background row: which classes the unpaired FPs have).
    Rows are ground truth, columns predictions; the last of each is background. With more than
    CONFUSION_CLASSES classes, the most confused ones (confusion_shown)."""
    labels, matrix = confusion_shown(cm)
    counts = matrix.astype(np.float64)
    sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(sums > 0, counts / sums, np.nan)
    n = len(labels)
    side = max(4.5, 0.36 * n + 2.5)
    width, height = 2 * side + 1.0, side + 1.2
    dpi = min(100.0 if n <= 12 else 85.0, MAX_SIDE_PX / max(width, height))
    fig = new_figure(figsize=(width, height), dpi=dpi)
    fig.subplots_adjust(left=1.6 / width, right=0.98, bottom=1.6 / height,
                        top=1 - 1.5 / height, wspace=2.2 / side)
    annotate = n <= 30
    for i, (values, what) in enumerate(((counts, "counts"), (normalized, "row-normalized"))):
        ax = fig.add_subplot(1, 2, i + 1)
        shown = np.ma.masked_invalid(values)
        # counts: scaled to the class cells, not to the summed "other classes" ones
        vmax = (np.nanmax(values[:, :-1][[j for j in range(n) if labels[j] != OTHER]][
            :, [j for j in range(n - 1) if labels[j] != OTHER]]) if i == 0 else 1.0)
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=max(vmax, 1e-9))
        if i == 1 or not annotate:  # the counts are written in their cells
            fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 30,
                      ha="center" if n > 6 else "right", fontsize=9)
        ax.set_yticks(range(n), labels if i == 0 or n <= 12 else [], fontsize=9)
        ax.set_xlabel("predicted class (columns)")
        ax.set_ylabel("ground-truth class (rows)" if i == 0 or n <= 12 else "same rows")
        ax.set_title(what, fontsize=11)
        if annotate and (i == 0 or n <= 12):  # many classes: the colors of the right panel
            top = np.nanmax(values) if np.isfinite(values).any() else 1.0
            for r in range(n):
                for c in range(n):
                    v = values[r, c]
                    if r == n - 1 and c == n - 1:
                        text = "-"  # background vs background: not counted
                    elif not np.isfinite(v) or (v == 0 and n > 12):
                        continue  # many classes: zeros left blank
                    else:
                        text = f"{int(v)}" if i == 0 else f"{v:.2f}"
                        if text == "0.00" and n > 12:
                            continue
                    ax.text(c, r, text, ha="center", va="center", fontsize=8 if n < 15 else 6,
                            color="white" if np.isfinite(v) and v > 0.6 * min(top, vmax)
                            else "black")
    heading = (f"Confusion matrix at IoU {threshold_key(cm.iou)}, score >= "
               f"{threshold_key(cm.score)} (rows: ground truth, columns: predicted)\n"
               "diagonal: TP;  off the diagonal: a wrong-class detection on a missed GT;  last "
               "column: missed GT with no detection on it;\nlast row: FP on no missed GT "
               "(background, duplicate, poor localization, or a wrong class on a GT already "
               "found)")
    if len(labels) < len(cm.labels):
        heading += (f"\nthe {len(labels) - 2} of {len(cm.labels) - 1} classes with most "
                    f"errors; '{OTHER}' sums the rest (all in confusion_matrix.csv)")
    fig.suptitle(f"{title}: {heading}" if title else heading, fontsize=11)
    save_png(fig, path)
    return path


TIDE_LABELS = {"classification": "classification\n(right box, wrong class)",
               "localization": "localization\n(right class, IoU 0.1-0.5)",
               "both": "both\n(wrong class, IoU 0.1-0.5)",
               "duplicate": "duplicate\n(GT already found)",
               "background": "background\n(on no GT)",
               "missed": "missed\n(GT never detected)"}


def plot_tide(tide: Dict, path: str, title: Optional[str] = None) -> str:
    """tide_errors.png: left, the AP points each TIDE error type costs (dAP, fixing that type
    alone); right, the FP and FN at the operating threshold by type."""
    fig = new_figure(figsize=(13.0, 5.4), dpi=100)
    fig.subplots_adjust(left=0.16, right=0.98, bottom=0.2, top=0.86, wspace=0.25)
    colors = palette("tab10")
    ax = fig.add_subplot(1, 2, 1)
    names = list(tide["dAP"])
    values = [100 * (tide["dAP"][n] or 0.0) for n in names]
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, color=[colors[i % 10] for i in range(len(names))])
    for yi, v, n in zip(y, values, names):
        ax.text(v, yi, f" {v:.2f} ({tide['counts'][n]})", va="center", fontsize=9)
    ax.set_yticks(y, [TIDE_LABELS.get(n, n) for n in names], fontsize=9)
    ax.set_xlim(0, max(values + [0.1]) * 1.3)
    ax.set_xlabel(f"AP{round(100 * tide['iou'])} points gained by fixing this type alone "
                  "(count of errors)")
    ap = tide["ap"]
    ax.set_title(f"what each error type costs: AP{round(100 * tide['iou'])} = "
                 f"{'-' if ap is None else f'{100 * ap:.1f}'}", fontsize=11)
    ax.grid(True, axis="x", lw=0.4, color="0.9")
    at = tide.get("at_score")
    ax2 = fig.add_subplot(1, 2, 2)
    if at:
        kinds = list(dict.fromkeys(list(at["fp"]) + list(at["fn"])))
        x = np.arange(len(kinds))
        fp = [at["fp"].get(k, 0) for k in kinds]
        fn = [at["fn"].get(k, 0) for k in kinds]
        ax2.bar(x - 0.2, fp, 0.4, label=f"false positives ({at['fp_total']})", color=colors[3])
        ax2.bar(x + 0.2, fn, 0.4, label=f"false negatives ({at['fn_total']})", color=colors[0])
        for xi, a, b in zip(x, fp, fn):
            if a:
                ax2.text(xi - 0.2, a, str(a), ha="center", va="bottom", fontsize=8)
            if b:
                ax2.text(xi + 0.2, b, str(b), ha="center", va="bottom", fontsize=8)
        ax2.set_xticks(x, [k.replace("_", " ") for k in kinds], rotation=20, ha="right",
                       fontsize=9)
        ax2.set_ylabel("count")
        ax2.legend(fontsize=9)
        ax2.set_title(f"errors at the operating threshold: score >= {at['score']:g}, IoU "
                      f"{threshold_key(tide['iou'])}", fontsize=11)
        ax2.grid(True, axis="y", lw=0.4, color="0.9")
    heading = "Which errors cost the AP (TIDE error types)"
    fig.suptitle(f"{title}: {heading}" if title else heading, fontsize=12)
    save_png(fig, path)
    return path
