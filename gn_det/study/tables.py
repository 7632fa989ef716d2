"""The grid's results: one row per cell (a seed of a preset at a batch) as results.csv,
results.json (rows plus the grid's settings and the machine: enough to rebuild every table and the
plot without training) and results.md (AP and AP50 by preset and batch as mean ± 95 % interval
over seeds, the verdicts on the differences, and a per-cell table)."""
import csv
import io
from typing import Dict, List, Optional, Sequence

from tabulate import tabulate

from ..evaluation.metrics import threshold_key
from ..utils.file_io import atomic_write
from ..utils.file_io import write_json as write_strict_json
from .stats import INTERVAL, Summary, by_seed, paired_difference, summarize, verdict

# results.csv columns, in order; metrics are in percent, like detectron2's COCOEvaluator.
FIELDS = ["design", "preset", "batch", "seed", "status", "AP", "AP50", "AP75", "recall",
          "precision", "f1", "main_iou", "main_score", "accumulate_steps", "effective_batch",
          "images", "max_iter", "iterations", "base_lr", "warmup_iters", "steps", "train_s",
          "s_per_iter", "eval_s", "wall_s", "cpu_s", "peak_rss_mb", "init_digest", "error",
          "folder", "config_digest", "train_precision"]


def _pct(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(100.0 * v, 2)


def summarize_metrics(metrics: Dict) -> Dict[str, object]:
    """AP, AP50, AP75 and overall recall / precision / F1 at the main IoU and main score (percent)
    from the evaluator's metrics.json."""
    if not metrics:
        return {}
    settings = metrics["settings"]
    iou, score = settings["main_iou"], settings["main_score"]
    at = metrics["pr"][threshold_key(iou)][threshold_key(score)]["overall"]
    coco = metrics["coco"]
    return {"AP": _pct(coco["AP"]), "AP50": _pct(coco["AP50"]), "AP75": _pct(coco["AP75"]),
            "recall": _pct(at["recall"]), "precision": _pct(at["precision"]),
            "f1": _pct(at["f1"]), "main_iou": iou, "main_score": score}


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return v


def write_csv(rows: Sequence[Dict], path: str) -> str:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in FIELDS})
    atomic_write(path, lambda f: f.write(text.getvalue().encode("utf-8")))
    return path


PERCENT_FIELDS = ("AP", "AP50", "AP75", "recall", "precision", "f1")
UNITS = {"percent (0-100)": list(PERCENT_FIELDS),
         "null": "not measured: the cell has not finished, failed, or the value is undefined"}


def write_json(rows: Sequence[Dict], info: Dict, path: str) -> str:
    """results.json: {"grid": settings, "machine": ..., "units": what the cells' numbers are in,
    "cells": rows} (strict JSON)."""
    data = dict(info, units=UNITS, cells=[{k: row.get(k) for k in FIELDS} for row in rows])
    return write_strict_json(path, data, indent=1)


def _num(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def cell_summary(rows: Sequence[Dict], preset: str, batch: int, key: str = "AP") -> Summary:
    """Mean and 95 % t-interval of `key` over the finished seeds of (preset, batch)."""
    return summarize(list(by_seed(rows, preset, batch, key).values()))


def _pivot_cell(rows: Sequence[Dict], preset: str, batch: int, key: str) -> str:
    """'41.3 ± 2.1 (3)'; seeds that diverged or failed are counted after the mean."""
    mine = [r for r in rows if r["preset"] == preset and int(r["batch"]) == batch]
    if not mine:
        return ""
    s = cell_summary(rows, preset, batch, key)
    text = f"{s.format()} ({s.n})" if s.n else ""
    others = [r["status"] for r in mine if r["status"] != "done"]
    for status in ("diverged", "failed"):
        if status in others:
            text += f" {others.count(status)} {status}"
    return text.strip()


def differences(rows: Sequence[Dict], presets: Sequence[str], batches: Sequence[int],
                reference: Optional[str] = None, key: str = "AP") -> List[Dict]:
    """The differences the verdicts speak of, each paired by seed: every preset at its smallest
    batch against itself at its largest (the batch's effect), and every other preset against
    `reference` (default: bn_all, else the first preset) at each batch; only between cells the
    grid ran."""
    ran = {(r["preset"], int(r["batch"])) for r in rows}
    out = []
    for p in presets:
        mine = sorted(b for b in batches if (p, b) in ran)
        if len(mine) > 1:
            lo, hi = mine[0], mine[-1]
            d = paired_difference(by_seed(rows, p, lo, key), by_seed(rows, p, hi, key))
            out.append({"a": f"{p} at {lo} img/GPU", "b": f"{p} at {hi} img/GPU", "diff": d})
    ref = reference or ("bn_all" if "bn_all" in presets else presets[0])
    for b in batches:
        for p in presets:
            if p != ref and (p, b) in ran and (ref, b) in ran:
                d = paired_difference(by_seed(rows, p, b, key), by_seed(rows, ref, b, key))
                out.append({"a": f"{p} at {b} img/GPU", "b": f"{ref} at {b}", "diff": d})
    return out


def format_markdown(rows: Sequence[Dict], presets: Sequence[Dict], batches: Sequence[int],
                    header: str = "", reference: Optional[str] = None) -> str:
    """results.md: AP and AP50 by preset x batch (mean ± 95 % t-interval over seeds, the number
    of seeds in brackets), the verdicts, then one row per cell; `presets` are
    {"name", "description"} in grid order."""
    names = [p["name"] for p in presets]
    first = next((r for r in rows if r.get("main_iou") is not None), None)
    iou = threshold_key(first["main_iou"]) if first else "?"
    score = threshold_key(first["main_score"]) if first else "?"
    parts = [header] if header else []
    for key, what in (("AP", "Box AP (COCO AP@[.5:.95], %)"), ("AP50", "Box AP50 (%)")):
        pivot = [[n] + [_pivot_cell(rows, n, b, key) for b in batches] for n in names]
        parts += [f"{what} by images per GPU: mean ± half-width of the {INTERVAL} (seeds "
                  f"finished):", "",
                  tabulate(pivot, ["preset"] + [f"{b} img/GPU" for b in batches],
                           tablefmt="github", disable_numparse=True), ""]
    parts += [f"Differences in AP, paired by seed ({INTERVAL} of the per-seed differences; "
              f"real when it excludes 0):", ""]
    parts += [f"- {verdict(d['a'], d['b'], d['diff'])}"
              for d in differences(rows, names, batches, reference)]
    per_cell = []
    for r in rows:
        per_cell.append([
            r["preset"], r["batch"], r.get("seed", "-"), r["status"], _num(r.get("AP")),
            _num(r.get("AP50")), _num(r.get("recall")), _num(r.get("precision")),
            f"{r.get('max_iter', '-')} x {r.get('accumulate_steps') or 1}",
            _num(r.get("base_lr"), "{:g}"), _num(r.get("train_s"), "{:.0f}"),
            _num(r.get("s_per_iter"), "{:.3f}"), _num(r.get("peak_rss_mb"), "{:.0f}")])
    parts += ["", f"Per cell (recall / precision: all classes pooled, IoU {iou}, score >= "
              f"{score}; iters x micro-steps per iteration; train s: training loop only; peak "
              f"RSS: the cell's process):", "",
              tabulate(per_cell, ["preset", "img/GPU", "seed", "status", "AP", "AP50", "recall",
                                  "precision", "iters", "BASE_LR", "train s", "s/iter",
                                  "peak RSS MB"], tablefmt="github", disable_numparse=True),
              "", "Presets:", ""]
    parts += [f"- `{p['name']}`: {p['description']}" for p in presets]
    return "\n".join(parts) + "\n"


def write_markdown(text: str, path: str) -> str:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
