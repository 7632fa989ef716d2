"""ap_vs_batch.png: box AP against images per GPU, one line per norm preset, on a log2 batch axis
(in the spirit of Figure 1 of Wu & He, "Group Normalization", 2018). Diverged cells are drawn as
crosses at AP 0; failed cells are left out."""
from typing import Dict, Sequence

from ..utils.file_io import atomic_write
from ..utils.plotting import new_figure, palette

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]


def plot_ap_vs_batch(rows: Sequence[Dict], presets: Sequence[str], batches: Sequence[int],
                     path: str, title: str = "") -> str:
    """Write the figure to `path` (PNG); lines in the order of `presets`."""
    fig = new_figure(figsize=(7.5, 5.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    colors = palette("tab10")
    diverged_shown = False
    for k, name in enumerate(presets):
        mine = sorted((r for r in rows if r["preset"] == name), key=lambda r: r["batch"])
        done = [r for r in mine if r["status"] == "done" and r.get("AP") is not None]
        color = colors[k % len(colors)]
        ax.plot([r["batch"] for r in done], [r["AP"] for r in done], color=color, lw=2,
                marker=_MARKERS[k % len(_MARKERS)], markersize=7, label=name)
        diverged = [r["batch"] for r in mine if r["status"] == "diverged"]
        if diverged:
            ax.plot(diverged, [0.0] * len(diverged), ls="", marker="x", markersize=11, mew=2.5,
                    color=color, label=None if diverged_shown else "diverged (loss NaN/inf)")
            diverged_shown = True
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batches))
    ax.set_xticklabels([str(b) for b in batches])
    ax.minorticks_off()
    if batches:
        ax.set_xlim(min(batches) / 1.25, max(batches) * 1.25)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("images per GPU (per-process batch)")
    ax.set_ylabel("box AP (COCO AP@[.5:.95], %)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    ax.set_title(title or "AP vs images per GPU", fontsize=10)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path
