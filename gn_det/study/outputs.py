"""What a norm x batch study writes and prints besides its cells: the grid's settings and machine
(results.json), the Markdown header, the tables and plots rewritten after every cell (in
OUT/<design>/), the same rebuilt from a results.json without training, the dry-run listing and
the warning that a shared CPU inflates timings."""
import dataclasses
import os
import shlex
import time

from ..engine.precision import precision_from_cfg
from ..utils.file_io import read_json
from ..utils.machine import machine_info
from .ap_plot import plot_ap_vs_batch
from .runner import FINISHED
from .stats import INTERVAL
from .tables import format_markdown, write_csv, write_json, write_markdown

DESIGN_TEXT = {
    "controlled": "controlled design (only the norm's batch varies: every cell steps the "
                  "optimizer on the same {effective} images with the same LR and schedule, as "
                  "b images per forward x {effective}/b accumulated micro-steps; RetinaNet's loss "
                  "normalized per optimizer step)",
    "budget": "budget design (what one small GPU gives: b images per optimizer step, BASE_LR "
              "scaled with b, the image budget below but at least {min_steps} optimizer steps)",
}


def grid_info(grid, argv, cfg) -> dict:
    """results.json's settings: the command, datasets, design, presets, batches, seeds,
    schedule, machine."""
    return {"grid": {
        "command": " ".join(shlex.quote(a) for a in ["python", "tools/compare_norms.py", *argv]),
        "base_config": os.path.relpath(grid.base_config, os.getcwd()),
        "train_dataset": list(cfg.DATASETS.TRAIN), "test_dataset": list(cfg.DATASETS.TEST),
        "design": grid.design, "effective_batch": grid.effective_batch or None,
        "presets": [{"name": p.name, "description": p.description,
                     "opts": list(p.opts), "config_file": p.config_file} for p in grid.presets],
        "batches": list(grid.batches), "seeds": grid.seeds,
        "schedule": dataclasses.asdict(grid.schedule), "precision": cfg.MODEL.PRECISION,
        "precision_used": precision_from_cfg(cfg, log=False).describe(),
        "interval": INTERVAL, "opts": [str(o) for o in grid.opts],
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, "machine": machine_info()}


def markdown_header(info: dict) -> str:
    g, m, s = info["grid"], info["machine"], info["grid"]["schedule"]
    steps = ", ".join(f"{f:g}" for f in s["step_fractions"]) or "none"
    used = f", run as {g['precision_used']}" if g.get("precision_used") else ""
    design = DESIGN_TEXT[g["design"]].format(effective=g.get("effective_batch"),
                                             min_steps=s.get("min_steps", 0))
    return (f"Command: `{g['command']}`\n\n"
            f"Trained on {', '.join(g['train_dataset'])}, evaluated on "
            f"{', '.join(g['test_dataset'])}; {design}. Image budget {s['images']} per cell, "
            f"BASE_LR = {s['lr_per_image']:g} x the optimizer's batch ({s['optimizer']}), "
            f"warm-up {s['warmup_images']} images, LR steps at {steps} of the schedule; seeds "
            f"{', '.join(str(x) for x in g['seeds'])} (SEED: initial weights, data order); "
            f"MODEL.PRECISION {g.get('precision', '?')}{used}.\n"
            f"Machine: {m['cpu']}, {m['usable_cores']} usable cores; {g.get('jobs', '?')} "
            f"cell(s) at a time, {g.get('threads') or m['torch_threads']} torch thread(s) each; "
            f"torch {m.get('torch', '?')}.\n")


def design_folder(out: str, design: str) -> str:
    return os.path.join(out, design)


def plot_title(rows, grid: dict, key: str) -> str:
    """A plot's title: metric, data, design and the seeds with a finished cell (of those asked)."""
    done = len({r["seed"] for r in rows if r.get("status") in FINISHED})
    asked = len(grid["seeds"])
    seeds = f"{done} seed(s)" if done == asked else f"{done} of {asked} seeds"
    return (f"{key} vs images per GPU: {', '.join(grid['train_dataset'])}, {grid['design']} "
            f"design, {seeds}")


def write_outputs(rows, info, out, cell_folders_in_out: bool = True):
    """results.csv, results.json, results.md, ap_vs_batch.png and ap50_vs_batch.png of the rows
    so far, in OUT/<design>/; cell folders are written relative to OUT (committable), from the
    paths the runner gives (`cell_folders_in_out`), else as they are (already relative)."""
    g = info["grid"]
    folder = design_folder(out, g["design"])
    os.makedirs(folder, exist_ok=True)
    info["grid"]["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if cell_folders_in_out:
        rows = [dict(r, folder=r.get("folder") and os.path.relpath(r["folder"], out))
                for r in rows]
    names = [p["name"] for p in g["presets"]]
    write_csv(rows, os.path.join(folder, "results.csv"))
    write_json(rows, info, os.path.join(folder, "results.json"))
    write_markdown(format_markdown(rows, g["presets"], g["batches"], markdown_header(info),
                                   g.get("reference")), os.path.join(folder, "results.md"))
    for key, name in (("AP", "ap_vs_batch.png"), ("AP50", "ap50_vs_batch.png")):
        title = plot_title(rows, g, key)
        plot_ap_vs_batch(rows, names, g["batches"], os.path.join(folder, name), title, key)


def rebuild(results_json: str, out: str):
    """Rewrite every table and plot from a results.json (e.g. one committed under docs/) into
    OUT/<design>/, without training; (its rows, that folder)."""
    data = read_json(results_json)
    if not isinstance(data, dict) or "grid" not in data or "cells" not in data:
        raise ValueError(f"--rebuild-from {results_json}: not a compare_norms results.json (no "
                         f"'grid' and 'cells')")
    info = {"grid": data["grid"], "machine": data.get("machine", {})}
    write_outputs(data["cells"], info, out, cell_folders_in_out=False)
    return data["cells"], design_folder(out, info["grid"]["design"])


def dry_run(grid, out):
    for cell in grid.cells():
        s = grid.solver(cell.batch)
        print(f"{cell.key}: {s['SOLVER.MAX_ITER']} iterations x {s['SOLVER.ACCUMULATE_STEPS']} "
              f"micro-step(s), BASE_LR {s['SOLVER.BASE_LR']:g}, warm-up "
              f"{s['SOLVER.WARMUP_ITERS']} it, steps {list(s['SOLVER.STEPS'])}, checkpoint every "
              f"{s['SOLVER.CHECKPOINT_PERIOD']} it -> {cell.folder(out)}")


def warn_if_busy(threads: int, prog: str):
    """Timings of a shared CPU are inflated; threads beyond the free cores make torch crawl."""
    if not hasattr(os, "getloadavg"):
        return
    load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    if load > cores * 0.5:
        hint = "" if threads == 1 else "; if cells crawl, use --threads 1"
        print(f"{prog}: warning: load average {load:.1f} on {cores} cores: other work shares the "
              f"CPU, so times are inflated{hint}", flush=True)
