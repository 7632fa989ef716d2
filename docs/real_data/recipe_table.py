"""Tables from recipe_ablation.sh's runs: per dataset and variant, the mean over seeds of AP and
AP50 on tune_val and of the train-val gap (AP on the run's own training images, tune_train,
minus AP on tune_val), each with its 95 % t-interval half-width over the seeds, and the mean
training time; then each variant's difference from the reference variant (`baseline` for the
ablation, `fp32` for the precision runs), paired by seed (one seed: same initial weights and
data order), with the fp32 seeds' range where fp32 is the reference. Markdown on stdout; AP in
percent. Also reads the schedule sweep (OUT/schedule: one row per length).

    python docs/real_data/recipe_table.py output/recipe_ablation
    python docs/real_data/recipe_table.py output/recipe_ablation/schedule
    python docs/real_data/recipe_table.py output/precision_accuracy
"""
import json
import math
import sys
from pathlib import Path

from gn_det.study.stats import paired_difference, summarize, verdict

VARIANTS = ["baseline", "lsj", "color", "crop", "ema", "full", "fp32", "bf16"]
REFERENCES = ("baseline", "fp32")


def percent(value):
    return None if value is None or not math.isfinite(value) else 100 * value


def read_run(path: Path):
    """(val AP, val AP50, train AP, training seconds) of one run's metrics_final.json, AP in
    percent."""
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
    return percent(val.get("AP")), percent(val.get("AP50")), percent(train.get("AP")), seconds


def read_variants(folder: Path):
    """{variant: {seed: (val AP, val AP50, train AP, seconds)}} of one dataset's runs."""
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    out = {}
    for variant in [v for v in VARIANTS if v in present] + [v for v in present
                                                             if v not in VARIANTS]:
        runs = {int(p.parent.name[len("seed"):]): read_run(p)
                for p in sorted((folder / variant).glob("seed*/metrics_final.json"))}
        if runs:
            out[variant] = runs
    return out


def formatted(values) -> str:
    return summarize([v for v in values if v is not None]).format()


def main(root: str) -> None:
    root = Path(root)
    datasets = {d: read_variants(root / d) for d in sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name != "schedule")}
    print("| dataset | variant | seeds | val AP | val AP50 | train AP | gap (train - val AP) "
          "| training min |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset, variants in datasets.items():
        for variant, runs in variants.items():
            val, val50, train, secs = zip(*runs.values())
            gaps = [t - v for t, v in zip(train, val) if t is not None and v is not None]
            minutes = [s / 60 for s in secs if s]
            took = f"{sum(minutes) / len(minutes):.1f}" if minutes else "—"
            print(f"| {dataset} | {variant} | {len(runs)} | {formatted(val)} | "
                  f"{formatted(val50)} | {formatted(train)} | {formatted(gaps)} | {took} |")
    lines = []
    for dataset, variants in datasets.items():
        reference = next((r for r in REFERENCES if r in variants), None)
        if reference is None:
            continue
        ref = variants[reference]
        for variant, runs in variants.items():
            if variant == reference:
                continue
            for key, index in (("AP", 0), ("AP50", 1)):
                diff = paired_difference({s: r[index] for s, r in runs.items()},
                                         {s: r[index] for s, r in ref.items()})
                line = verdict(f"{dataset} {variant}", reference, diff, unit=key)
                if reference == "fp32":
                    values = [r[index] for r in ref.values()]
                    mean = summarize([r[index] for r in runs.values()]).mean
                    inside = min(values) <= mean <= max(values)
                    line += (f" {variant} mean {mean:.1f} {key}, fp32 seeds "
                             f"{min(values):.1f}-{max(values):.1f}: "
                             f"{'within' if inside else 'outside'} fp32's seed range.")
                lines.append(f"- {line}")
    if lines:
        print("\nDifferences from the reference variant (tune_val):\n")
        print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python docs/real_data/recipe_table.py OUT  (recipe_ablation.sh's OUT)")
    main(sys.argv[1])
