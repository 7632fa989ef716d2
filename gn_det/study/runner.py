"""Runs a grid's cells, each in its own process (a crash or memory blow-up ends that cell only;
peak RSS is per cell), skipping cells finished earlier, with a progress line and grid ETA per cell.

A cell's folder OUT/<design>/<preset>/bs<batch>/seed<seed>/ holds cell.yaml (its full config),
the trainer's outputs, process.log, and result.json once finished (done, or diverged: a non-finite
loss), which is what makes a rerun skip it. A cell that crashed gets failed.json instead and runs
again on a rerun; an interrupted one continues from its last checkpoint (resume, the default), or
restarts from iteration 0. Finished rows of an earlier results.json (e.g. one committed under
docs/, from another machine) stand in for cells with the same config and training precision.
"""
import concurrent.futures
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Set

import yaml

from ..engine.precision import precision_from_cfg
from ..utils.file_io import JSONFileError, atomic_write, read_json, write_json
from ..utils.machine import peak_rss_mb
from ..utils.processes import child_env
from ..utils.text import plural
from .grid import Cell, Grid
from .tables import summarize_metrics
from .train_cell import CELL_CONFIG, TRAIN_RESULT

RESULT = "result.json"
FAILED = "failed.json"
PROCESS_LOG = "process.log"
FINISHED = ("done", "diverged")
# may differ between runs of the same grid (e.g. a moved --out); caches do not change results
_IGNORED_KEYS = ("OUTPUT_DIR", "DATASETS.CACHE_DIR")


class Eta:
    """Seconds left in a grid, from measured cell times: a cell is expected to take the mean time
    of finished cells with its batch (every cell sees the same images), else of all finished."""

    def __init__(self):
        self._seconds: Dict[int, List[float]] = {}

    def add(self, batch: int, seconds: float) -> None:
        self._seconds.setdefault(batch, []).append(seconds)

    def remaining(self, batches: Sequence[int]) -> Optional[float]:
        every = [s for times in self._seconds.values() for s in times]
        if not every:
            return None
        mean = sum(every) / len(every)
        return sum(sum(self._seconds[b]) / len(self._seconds[b]) if b in self._seconds else mean
                   for b in batches)

    def describe(self, batches: Sequence[int], jobs: int = 1) -> str:
        """'ETA 12m30s' for cells of these batches left (not finished), `jobs` at a time."""
        if not batches:
            return "grid done"
        left = self.remaining(batches)
        return f"ETA {format_seconds(None if left is None else left / jobs)}"


def format_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _flatten(node, prefix="") -> Dict[str, object]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_differences(old_yaml: str, new_yaml: str) -> List[str]:
    """Dotted keys whose values differ between two dumped configs ('KEY: old -> new')."""
    old, new = (_flatten(yaml.safe_load(t) or {}) for t in (old_yaml, new_yaml))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if k not in _IGNORED_KEYS and old.get(k) != new.get(k)]


def read_result(path: str) -> Optional[dict]:
    """A cell's JSON record, or None when it is missing or unreadable (the cell runs again)."""
    try:
        return read_json(path)
    except JSONFileError:
        return None


def finished_result(folder: str) -> Optional[dict]:
    """The cell's result.json if it is complete (a finished cell), else None."""
    result = read_result(os.path.join(folder, RESULT))
    if result and result.get("status") in FINISHED and "peak_rss_mb" in result:
        return result
    return None


def prepare_folder(cell: Cell, folder: str, cfg_yaml: str, resume: bool = True) -> Optional[dict]:
    """Return the finished result to reuse, or None after readying the folder for a run
    (cleared unless resuming). A folder with another config is an error, never overwritten."""
    config_path = os.path.join(folder, CELL_CONFIG)
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            diffs = config_differences(f.read(), cfg_yaml)
        result = finished_result(folder)
        if result is not None or resume:
            if diffs:
                more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
                raise ValueError(f"{folder} holds cell {cell.key} run with another config "
                                 f"({'; '.join(diffs[:3])}{more}); use another --out, or delete "
                                 f"that folder to run it again")
            if result is not None:
                return result
        if not resume:
            shutil.rmtree(folder)
    elif os.path.isdir(folder) and os.listdir(folder):
        raise ValueError(f"{folder} exists and is not a grid cell (no {CELL_CONFIG}); use "
                         f"another --out")
    os.makedirs(folder, exist_ok=True)
    for stale in (RESULT, FAILED, TRAIN_RESULT):
        if os.path.exists(os.path.join(folder, stale)):
            os.unlink(os.path.join(folder, stale))
    atomic_write(config_path, lambda f: f.write(cfg_yaml.encode()))
    return None


def run_process(command: Sequence[str], log_path: str, threads: int = 0,
                running: Optional[Set[subprocess.Popen]] = None,
                poll_s: float = 0.5) -> Dict[str, object]:
    """Run `command` with stdout+stderr to `log_path`; its exit code, wall seconds, CPU seconds
    (user + system, its own and its waited-for children's) and peak RSS in MB. `threads` > 0 sets
    OMP_NUM_THREADS / MKL_NUM_THREADS (torch's intra-op threads);
    `running` holds the process while it runs, so that the caller can stop it.

    Peak RSS is the process's own high-water mark (VmHWM), read every `poll_s` while it runs.
    Where /proc is missing, or the process ends before the first read, it is the kernel's
    ru_maxrss at exit, which also counts the runner's own memory (a child starts from its
    parent's peak), so it is an upper bound."""
    env = child_env(threads)
    running = set() if running is None else running
    start, peak = time.perf_counter(), None
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=env)
        running.add(proc)
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                hwm = peak_rss_mb(proc.pid)
                peak = hwm if peak is None or (hwm or 0) > peak else peak
                time.sleep(poll_s)
        except BaseException:  # the runner itself is stopping: take the cell down with it
            proc.kill()
            proc.wait()
            raise
        finally:
            running.discard(proc)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if peak is None:
        peak = peak_rss_mb(usage=usage)
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(peak, 1)}


def _exit_reason(rc: int, log_path: str) -> str:
    """Why a cell process failed: the signal that killed it, or its exit code and last line."""
    if rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    last = ""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        last = lines[-1] if lines else ""
    except OSError:
        pass
    return f"exit code {rc}: {last[:300]}" if last else f"exit code {rc}"


def config_digest(cfg_yaml: str) -> str:
    """sha256 (16 hex digits) of a dumped config without the keys that may differ between runs
    of the same cell (_IGNORED_KEYS): equal digests mean the same training."""
    flat = {k: v for k, v in _flatten(yaml.safe_load(cfg_yaml) or {}).items()
            if k not in _IGNORED_KEYS}
    text = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_record(cell: Cell, cfg, folder: str) -> Dict[str, object]:
    """What a cell is, from its config (the part of its row known before it runs), with the
    config's digest and the precision it trains in on this machine (what reuse must match)."""
    s = cfg.SOLVER
    effective = cell.batch * s.ACCUMULATE_STEPS
    return {"design": cell.design, "preset": cell.preset.name, "batch": cell.batch,
            "seed": cell.seed, "accumulate_steps": s.ACCUMULATE_STEPS,
            "effective_batch": effective, "images": s.MAX_ITER * effective,
            "max_iter": s.MAX_ITER, "base_lr": s.BASE_LR, "warmup_iters": s.WARMUP_ITERS,
            "steps": list(s.STEPS), "folder": folder, "config_digest": config_digest(cfg.dump()),
            "train_precision": precision_from_cfg(cfg, log=False).name}


def reusable_row(record: Dict, rows: Sequence[Dict]) -> Optional[Dict]:
    """The finished row of `rows` (an earlier results.json's cells) that is this cell: same
    design, preset, batch and seed, config digest and training precision; else None. Rows
    written before digests were recorded never match."""
    keys = ("design", "preset", "batch", "seed", "config_digest", "train_precision")
    for row in rows:
        if row.get("status") in FINISHED and all(row.get(k) == record[k] for k in keys):
            return row
    return None


def run_cell(cell: Cell, cfg, folder: str, resume: bool = True,
             command: Optional[Sequence[str]] = None, threads: int = 0,
             running: Optional[Set[subprocess.Popen]] = None) -> Dict[str, object]:
    """Run one prepared cell; write and return result.json (finished) or failed.json."""
    log_path = os.path.join(folder, PROCESS_LOG)
    command = list(command or [sys.executable, "-m", "gn_det.study.train_cell"])
    command += [folder] + (["--resume"] if resume else [])
    proc = run_process(command, log_path, threads, running)
    record = dict(cell_record(cell, cfg, folder), threads=threads or None, **proc)
    train = read_result(os.path.join(folder, TRAIN_RESULT)) if proc["rc"] == 0 else None
    if train is None:
        reason = _exit_reason(proc["rc"], log_path) if proc["rc"] else \
            f"exit code 0 but no {TRAIN_RESULT}"
        record.update(status="failed", error=reason)
        write_json(os.path.join(folder, FAILED), record, indent=1)
        return record
    peak = max(x for x in (record["peak_rss_mb"], train.pop("peak_rss_mb", None)) if x is not None)
    record.update(train, peak_rss_mb=peak)
    if train["status"] == "done":
        record.update(summarize_metrics(read_result(train["metrics_file"]) or {}))
    write_json(os.path.join(folder, RESULT), record, indent=1)
    return record


def remove_checkpoints(folder: str, final: bool = False) -> None:
    """Drop model_<iter>.pth; keep model_final.pth (last_checkpoint points to it) unless `final`
    (then both go: the cell's result.json is what the study reads)."""
    paths = glob.glob(os.path.join(folder, "model_[0-9]*.pth"))
    if final:
        paths += [os.path.join(folder, name) for name in ("model_final.pth", "last_checkpoint")]
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)


def describe(record: Dict) -> str:
    """A cell's outcome in a few words, for its progress line."""
    if record["status"] == "failed":
        return f"FAILED ({record['error']})"
    if record["status"] == "diverged":
        return f"diverged after {(record.get('start_iter') or 0) + record['iterations']} iterations"
    ap, ap50 = (("-" if record.get(k) is None else f"{record[k]:.1f}") for k in ("AP", "AP50"))
    return f"AP {ap}  AP50 {ap50}"


def run_grid(grid: Grid, out: str, resume: bool = True, keep_checkpoints: bool = False,
             jobs: int = 1, threads: int = 0, delete_weights: bool = False,
             on_update: Callable[[List[Dict]], None] = lambda rows: None,
             log: Callable[[str], None] = lambda line: print(line, flush=True),
             command: Optional[Sequence[str]] = None,
             reuse: Sequence[Dict] = (), reuse_source: str = "") -> List[Dict]:
    """Run (or skip) every cell, `jobs` at a time, in grid order; `on_update(rows)` after each
    cell with the rows so far, in grid order. `threads` > 0: torch threads per cell.
    `resume`: interrupted cells continue from their last checkpoint (else restart);
    `delete_weights`: a finished cell keeps no checkpoint at all; `reuse`: rows of an earlier
    results.json (`reuse_source`) whose matching finished cells are written into their folders
    as finished (reusable_row) instead of run.

    Every cell's config is built and validated before the first one runs."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    cells = grid.cells()
    configs = [grid.cell_cfg(cell, out) for cell in cells]
    n, width = len(cells), len(str(len(cells)))
    tags = [f"[{i + 1:>{width}}/{n}] {cell.key}" for i, cell in enumerate(cells)]
    eta, rows, pending = Eta(), {}, []
    for i, (cell, cfg) in enumerate(zip(cells, configs)):
        folder = cell.folder(out)
        reused = prepare_folder(cell, folder, cfg.dump(), resume)
        earlier = (reusable_row(cell_record(cell, cfg, folder), reuse)
                   if reused is None and reuse else None)
        if earlier is not None:
            reused = dict(earlier, folder=folder)
            write_json(os.path.join(folder, RESULT), reused, indent=1)
            log(f"{tags[i]}: taken from {reuse_source}: {describe(reused)}")
        elif reused is not None:
            log(f"{tags[i]}: finished earlier, skipped: {describe(reused)}")
        if reused is None:
            pending.append(i)
            continue
        eta.add(cell.batch, reused["wall_s"])
        rows[i] = reused
    if rows:
        on_update([rows[i] for i in sorted(rows)])
    lock, running, started = threading.Lock(), set(), time.perf_counter()

    def work(i: int) -> None:
        cell, cfg, folder = cells[i], configs[i], cells[i].folder(out)
        s = cfg.SOLVER
        accumulation = f" x {s.ACCUMULATE_STEPS} accumulated" if s.ACCUMULATE_STEPS > 1 else ""
        with lock:
            log(f"{tags[i]}: started, {s.MAX_ITER} iterations x {plural(cell.batch, 'image')}"
                f"{accumulation}, BASE_LR {s.BASE_LR:g}, warm-up {s.WARMUP_ITERS} it, steps "
                f"{list(s.STEPS)}; log {folder}/log.txt")
        record = run_cell(cell, cfg, folder, resume, command, threads, running)
        with lock:  # before this worker takes the next cell, so lines come in a natural order
            if record["status"] != "failed":
                eta.add(cell.batch, record["wall_s"])
                if delete_weights or not keep_checkpoints:
                    remove_checkpoints(folder, final=delete_weights)
            rows[i] = record
            timing = format_seconds(record["wall_s"])
            if record["status"] != "failed":
                timing += (f" (train {format_seconds(record['train_s'])}, "
                           f"{record['s_per_iter']} s/it)")
            left = [cells[j].batch for j in pending if j not in rows]
            log(f"{tags[i]}: {describe(record)} | {timing}, peak RSS "
                f"{record['peak_rss_mb']:.0f} MB | grid "
                f"{format_seconds(time.perf_counter() - started)} elapsed, "
                f"{eta.describe(left, jobs)}")
            on_update([rows[j] for j in sorted(rows)])

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        for future in concurrent.futures.as_completed([pool.submit(work, i) for i in pending]):
            future.result()  # re-raise a runner error (not a cell's: those are failed rows)
    except BaseException:  # Ctrl-C / SIGTERM: stop the running cells, start no more
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(running):
            proc.terminate()
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)
    return [rows[i] for i in sorted(rows)]
