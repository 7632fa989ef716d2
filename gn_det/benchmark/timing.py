"""Side-by-side timing: variants interleaved within each repeat, medians after warm-up, and
progress with an ETA (the machine facts a measurement must be read with: gn_det.utils.machine).

Interleaving matters on a shared machine: load from other processes changes over seconds, and
timing variant A's repeats before B's would turn that drift into a false A/B ratio.
"""
import statistics
import time
from typing import Callable, Dict, List, Mapping



def eta(done: int, total: int, elapsed: float) -> str:
    """'ETA 12s' while work is left, 'total 40s' once done."""
    left = elapsed / done * (total - done) if done else float("nan")
    return f"ETA {left:.0f}s" if done < total else f"total {elapsed:.0f}s"


CLOCKS: Dict[str, Callable[[], float]] = {
    # Elapsed time: what a user waits for; inflated by other processes' load.
    "wall": time.perf_counter,
    # CPU time of this process, all threads, user + system: with 1 torch thread, close to what
    # the work costs even while other processes compete for the cores.
    "cpu": time.process_time,
}


def interleaved(variants: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                label: str = "", progress: bool = True,
                clock: Callable[[], float] = time.perf_counter) -> Dict[str, List[float]]:
    """Seconds (of `clock`) per call of each variant, `repeats` samples each: after `warmup`
    untimed calls of every variant, each repeat calls every variant once, starting one variant
    later each time so that no variant always runs first (after another variant's cache /
    allocator state)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    samples = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = clock()
            variants[name]()
            samples[name].append(clock() - t0)
        if progress:
            elapsed = time.perf_counter() - start
            print(f"  {label}[{r + 1}/{repeats}] {eta(r + 1, repeats, elapsed)}", flush=True)
    return samples


def medians(samples: Mapping[str, List[float]]) -> Dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def ratio(num: float, den: float, digits: int = 3) -> float:
    return round(num / den, digits) if den > 0 else float("nan")
