"""What a grid will cost before it runs: each distinct (preset, batch) cell of the grid built as it
would train (its config, precision and accumulation) and timed for a few optimizer steps, all in
one process and interleaved round by round, so that every cell is timed under the same load; then
the grid's time from those step costs, the cells' step counts and a per-cell overhead (process
start, dataset registration, the final evaluation).

Timings are of one process at a time with `threads` torch threads; a grid run with --jobs J runs
J such processes at once, which share memory bandwidth: the estimate divides by J and adds
`contention` on top.
"""
import logging
import os
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
from detectron2.utils.events import EventStorage

from ..engine import Trainer
from .grid import Grid
from .runner import format_seconds

CELL_OVERHEAD_S = 20.0  # process start, registration, evaluation: measured 15-20 CPU s per cell
CONTENTION = 1.15  # two single-threaded cells at once on 2 cores, against one alone


def time_steps(grid: Grid, out: str, rounds: int = 4,
               log: Callable[[str], None] = print) -> Dict[Tuple[str, int], float]:
    """(preset, batch) -> median seconds per optimizer step, over `rounds` interleaved rounds
    after one warm-up round; the first seed's config of each cell."""
    trainers, seen = {}, set()
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    for cell in grid.cells():
        key = (cell.preset.name, cell.batch)
        if key in seen:
            continue
        seen.add(key)
        cfg = grid.cell_cfg(cell, out)
        cfg.defrost()
        cfg.DATASETS.TEST = ()
        cfg.OUTPUT_DIR = os.path.join(out, "estimate")
        trainers[key] = Trainer(cfg)._trainer
    times: Dict[Tuple[str, int], List[float]] = {k: [] for k in trainers}
    with EventStorage(0) as storage:
        for r in range(rounds + 1):
            for key, trainer in trainers.items():
                trainer.iter = r
                start = time.perf_counter()
                trainer.run_step()
                if r:
                    times[key].append(time.perf_counter() - start)
                storage.step()
            log(f"estimate: round {r + 1}/{rounds + 1} timed")
    return {k: statistics.median(v) for k, v in times.items()}


def estimate_grid(grid: Grid, step_s: Dict[Tuple[str, int], float], jobs: int = 1,
                  overhead_s: float = CELL_OVERHEAD_S, contention: float = CONTENTION) -> Dict:
    """Seconds of each cell (steps x step cost + overhead) and of the grid, `jobs` at a time."""
    rows, total = [], 0.0
    for (preset, batch), seconds in step_s.items():
        steps = grid.solver(batch)["SOLVER.MAX_ITER"]
        images = steps * batch * grid.solver(batch)["SOLVER.ACCUMULATE_STEPS"]
        cell_s = steps * seconds * (contention if jobs > 1 else 1.0) + overhead_s
        rows.append({"preset": preset, "batch": batch, "s_per_step": round(seconds, 3),
                     "s_per_image": round(seconds / (images / steps), 3), "steps": steps,
                     "images": images, "cell_s": round(cell_s)})
        total += cell_s * len(grid.seeds)
    return {"cells": rows, "grid_s": round(total / jobs), "seeds": len(grid.seeds),
            "jobs": jobs, "overhead_s": overhead_s, "contention": contention}


def format_estimate(est: Dict, precision: str, threads: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"{'cell':<24} {'s/step':>7} {'s/image':>8} {'steps':>6} {'images':>7} "
             f"{'cell':>7}"]
    for r in est["cells"]:
        lines.append(f"{r['preset'] + '/bs' + str(r['batch']):<24} {r['s_per_step']:>7.3f} "
                     f"{r['s_per_image']:>8.3f} {r['steps']:>6} {r['images']:>7} "
                     f"{format_seconds(r['cell_s']):>7}")
    lines.append(f"grid: {format_seconds(est['grid_s'])} for {est['seeds']} seed(s), "
                 f"{est['jobs']} cell(s) at a time (x{est['contention']} for sharing the cores, "
                 f"+{est['overhead_s']:.0f} s per cell); timed in {precision} with {threads} "
                 f"torch thread(s) at load average {load:.1f}, torch {torch.__version__}")
    return "\n".join(lines)
