"""The grid's results: one row per cell, as results.csv, results.json (rows plus the grid's
settings and the machine) and results.md (an AP-by-batch table and a per-cell table, ready to
paste into docs)."""
import csv
import io
from typing import Dict, Optional, Sequence

from tabulate import tabulate

from ..evaluation.metrics import threshold_key
from ..utils.file_io import atomic_write
from ..utils.file_io import write_json as write_strict_json

# results.csv columns, in order; metrics are in percent, like detectron2's COCOEvaluator.
FIELDS = ["preset", "batch", "status", "AP", "AP50", "AP75", "recall", "precision", "f1",
          "main_iou", "main_score", "images", "max_iter", "iterations", "base_lr", "warmup_iters",
          "steps", "train_s", "s_per_iter", "eval_s", "wall_s", "peak_rss_mb", "init_digest",
          "error", "folder"]


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


def write_json(rows: Sequence[Dict], info: Dict, path: str) -> str:
    """results.json: {"grid": settings, "machine": ..., "cells": rows} (strict JSON)."""
    data = dict(info, cells=[{k: row.get(k) for k in FIELDS} for row in rows])
    return write_strict_json(path, data, indent=1)


def _num(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _ap_cell(row: Optional[Dict]) -> str:
    if row is None:
        return ""
    if row["status"] == "done":
        return _num(row.get("AP"))
    return row["status"]


def format_markdown(rows: Sequence[Dict], presets: Sequence[Dict], batches: Sequence[int],
                    header: str = "") -> str:
    """results.md: AP by preset x batch, then one row per cell; `presets` are
    {"name", "description"} in grid order."""
    by_cell = {(r["preset"], r["batch"]): r for r in rows}
    first = next((r for r in rows if r.get("main_iou") is not None), None)
    iou = threshold_key(first["main_iou"]) if first else "?"
    score = threshold_key(first["main_score"]) if first else "?"
    pivot = [[p["name"]] + [_ap_cell(by_cell.get((p["name"], b))) for b in batches]
             for p in presets]
    per_cell = []
    for r in rows:
        per_cell.append([
            r["preset"], r["batch"], r["status"], _num(r.get("AP")), _num(r.get("AP50")),
            _num(r.get("recall")), _num(r.get("precision")), r.get("max_iter", "-"),
            _num(r.get("base_lr"), "{:g}"), _num(r.get("train_s"), "{:.0f}"),
            _num(r.get("s_per_iter"), "{:.3f}"), _num(r.get("peak_rss_mb"), "{:.0f}")])
    parts = [header] if header else []
    parts += [
        "Box AP (COCO AP@[.5:.95], %) by images per GPU:", "",
        tabulate(pivot, ["preset"] + [f"{b} img/GPU" for b in batches], tablefmt="github",
                 disable_numparse=True), "",
        f"Per cell (recall / precision: all classes pooled, IoU {iou}, score >= {score}; "
        f"train s: training loop only; peak RSS: the cell's process):", "",
        tabulate(per_cell, ["preset", "img/GPU", "status", "AP", "AP50", "recall", "precision",
                            "iters", "BASE_LR", "train s", "s/iter", "peak RSS MB"],
                 tablefmt="github", disable_numparse=True), "",
        "Presets:", "",
    ]
    parts += [f"- `{p['name']}`: {p['description']}" for p in presets]
    return "\n".join(parts) + "\n"


def write_markdown(text: str, path: str) -> str:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
