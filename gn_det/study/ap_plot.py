"""ap_vs_batch.png: box AP against images per GPU, one line per norm preset on a log2 batch axis
(in the spirit of Figure 1 of Wu & He, "Group Normalization", 2018): the mean over seeds with the
95 % t-interval as error bars, and each seed as a faint dot. Presets are nudged apart on the batch
axis so that their bars do not hide each other. Diverged seeds are drawn as crosses at AP 0;
failed cells are left out."""
from typing import Dict, Sequence

from ..utils.file_io import atomic_write
from ..utils.plotting import new_figure, palette
from .stats import INTERVAL, by_seed, summarize

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]
_NUDGE = 1.04  # multiplicative offset between presets on the log2 axis


def plot_ap_vs_batch(rows: Sequence[Dict], presets: Sequence[str], batches: Sequence[int],
                     path: str, title: str = "", key: str = "AP") -> str:
    """Write the figure to `path` (PNG); lines in the order of `presets`."""
    fig = new_figure(figsize=(9.0, 5.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    colors = palette("tab10")
    diverged_shown = False
    for k, name in enumerate(presets):
        color = colors[k % len(colors)]
        shift = _NUDGE ** (k - (len(presets) - 1) / 2)
        xs, means, errs = [], [], []
        for b in sorted(batches):
            seeds = by_seed(rows, name, b, key)
            s = summarize(list(seeds.values()))
            if s.n:
                xs.append(b * shift)
                means.append(s.mean)
                errs.append(s.half_width or 0.0)
                ax.plot([b * shift] * s.n, list(seeds.values()), ls="", marker=".", ms=6,
                        color=color, alpha=0.6, zorder=3)
        ax.errorbar(xs, means, yerr=errs, color=color, lw=2, capsize=3,
                    marker=_MARKERS[k % len(_MARKERS)], markersize=7, label=name)
        diverged = [int(r["batch"]) * shift for r in rows
                    if r["preset"] == name and r["status"] == "diverged"]
        if diverged:
            ax.plot(diverged, [0.0] * len(diverged), ls="", marker="x", markersize=11, mew=2.5,
                    color=color, label=None if diverged_shown else "diverged (loss NaN/inf)")
            diverged_shown = True
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batches))
    ax.set_xticklabels([str(b) for b in batches])
    ax.minorticks_off()
    if batches:
        ax.set_xlim(min(batches) / 1.3, max(batches) * 1.3)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("images per GPU (the batch the norm sees)")
    label = "box AP (COCO AP@[.5:.95], %)" if key == "AP" else f"box {key} (%)"
    ax.set_ylabel(f"{label}\nmean and {INTERVAL}; dots: seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)  # off the data
    ax.set_title(title or "AP vs images per GPU", fontsize=10)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path
