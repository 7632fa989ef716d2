"""The small-data recipe's ablation table from recipe_ablation.sh's runs: per dataset and variant,
the mean over seeds of AP and AP50 on tune_val and of the train-val gap (AP on the run's own
training images, tune_train, minus AP on tune_val), each with its 95 % t-interval half-width over
the seeds, plus the mean training time. Markdown on stdout; AP in percent. Also reads the
schedule sweep (OUT/schedule: one row per length) and the final runs (real_val / real_train).

    python docs/real_data/recipe_table.py output/recipe_ablation
    python docs/real_data/recipe_table.py output/recipe_ablation/schedule
"""
import json
import math
import statistics
import sys
from pathlib import Path

# Student's t 0.975 quantiles by degrees of freedom (seeds - 1); beyond: the normal's.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}
VARIANTS = ["baseline", "lsj", "color", "crop", "ema", "full"]


def mean_interval(values):
    """'mean ± half-width' (95 % t-interval over seeds) in percent, or the value alone for one."""
    values = [100 * v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    half = T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.1f} ± {half:.1f}"


def read_run(path: Path):
    """(val AP, val AP50, train AP, training seconds) of one run's metrics_final.json."""
    final = json.loads(path.read_text())
    results = final["results"]  # {dataset: {"bbox": ...}} when evaluated on several datasets
    if "bbox" in results:
        val, train = results["bbox"], {}
    else:
        val = next(v["bbox"] for k, v in results.items() if k.endswith("val"))
        train = next((v["bbox"] for k, v in results.items() if k.endswith("train")), {})
    log = path.with_name("log.txt")
    seconds = None
    if log.is_file():
        for line in log.read_text().splitlines():
            if "Total training time" in line:
                h, m, s = line.split("Total training time: ")[1].split()[0].split(":")
                seconds = int(h) * 3600 + int(m) * 60 + int(s)
    return val.get("AP"), val.get("AP50"), train.get("AP"), seconds


def main(root: str) -> None:
    root = Path(root)
    print("| dataset | variant | seeds | val AP | val AP50 | train AP | gap (train - val AP) "
          "| training min |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "schedule"):
        present = [p.name for p in (root / dataset).iterdir() if p.is_dir()]
        for variant in VARIANTS + sorted(set(present) - set(VARIANTS)):
            runs = [read_run(p) for p in sorted((root / dataset / variant).glob("seed*/"
                                                                              "metrics_final.json"))]
            if not runs:
                continue
            val, val50, train, secs = zip(*runs)
            gaps = [t - v if t is not None and v is not None else None
                    for t, v in zip(train, val)]
            minutes = [s / 60 for s in secs if s]
            took = f"{statistics.fmean(minutes):.1f}" if minutes else "—"
            print(f"| {dataset} | {variant} | {len(runs)} | {mean_interval(val)} | "
                  f"{mean_interval(val50)} | {mean_interval(train)} | {mean_interval(gaps)} | "
                  f"{took} |")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python docs/real_data/recipe_table.py OUT  (recipe_ablation.sh's OUT)")
    main(sys.argv[1])
