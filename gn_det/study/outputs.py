"""What a norm x batch study writes and prints besides its cells: the grid's settings and machine
(results.json), the Markdown header, the tables and plot rewritten after every cell, the
dry-run listing and the warning that a shared CPU inflates timings."""
import dataclasses
import os
import shlex
import time

from ..utils.machine import machine_info
from .ap_plot import plot_ap_vs_batch
from .tables import format_markdown, write_csv, write_json, write_markdown


def grid_info(grid, argv, cfg) -> dict:
    """results.json's settings: the command, datasets, presets, batches, schedule, machine."""
    return {"grid": {
        "command": " ".join(shlex.quote(a) for a in ["python", "tools/compare_norms.py", *argv]),
        "base_config": os.path.relpath(grid.base_config, os.getcwd()),
        "train_dataset": list(cfg.DATASETS.TRAIN), "test_dataset": list(cfg.DATASETS.TEST),
        "presets": [{"name": p.name, "description": p.description,
                     "opts": list(p.opts), "config_file": p.config_file} for p in grid.presets],
        "batches": list(grid.batches), "schedule": dataclasses.asdict(grid.schedule),
        "opts": [str(o) for o in grid.opts], "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, "machine": machine_info()}


def markdown_header(info: dict) -> str:
    g, m, s = info["grid"], info["machine"], info["grid"]["schedule"]
    steps = ", ".join(f"{f:g}" for f in s["step_fractions"]) or "none"
    return (f"Command: `{g['command']}`\n\n"
            f"Trained on {', '.join(g['train_dataset'])}, evaluated on "
            f"{', '.join(g['test_dataset'])}. Every cell: {s['images']} training images, "
            f"BASE_LR = {s['lr_per_image']:g} x images per GPU, warm-up {s['warmup_images']} "
            f"images, LR steps at {steps} of the schedule, SEED {s['seed']}.\n"
            f"Machine: {m['cpu']}, {m['usable_cores']} usable cores; {g['jobs']} cell(s) at a "
            f"time, {g['threads'] or m['torch_threads']} torch thread(s) each.\n")


def write_outputs(rows, grid, info, out):
    """results.csv, results.json, results.md and ap_vs_batch.png of the rows so far."""
    info["grid"]["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    names = [p.name for p in grid.presets]
    write_csv(rows, os.path.join(out, "results.csv"))
    write_json(rows, info, os.path.join(out, "results.json"))
    write_markdown(format_markdown(rows, info["grid"]["presets"], grid.batches,
                                   markdown_header(info)), os.path.join(out, "results.md"))
    s = grid.schedule
    title = (f"AP vs images per GPU: train {', '.join(info['grid']['train_dataset'])}, "
             f"{s.images} images per cell, LR {s.lr_per_image:g} x batch")
    plot_ap_vs_batch(rows, names, grid.batches, os.path.join(out, "ap_vs_batch.png"), title)


def dry_run(grid, out):
    for cell in grid.cells():
        s = grid.schedule.solver(cell.batch)
        print(f"{cell.key}: {s['SOLVER.MAX_ITER']} iterations, BASE_LR {s['SOLVER.BASE_LR']:g}, "
              f"warm-up {s['SOLVER.WARMUP_ITERS']} it, steps {list(s['SOLVER.STEPS'])}, "
              f"checkpoint every {s['SOLVER.CHECKPOINT_PERIOD']} it -> {cell.folder(out)}")


def warn_if_busy(threads: int, prog: str):
    """Timings of a shared CPU are inflated; threads beyond the free cores make torch crawl."""
    if not hasattr(os, "getloadavg"):
        return
    load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    if load > cores * 0.5:
        hint = "" if threads == 1 else "; if cells crawl, use --threads 1"
        print(f"{prog}: warning: load average {load:.1f} on {cores} cores: other work shares the "
              f"CPU, so times are inflated{hint}", flush=True)
