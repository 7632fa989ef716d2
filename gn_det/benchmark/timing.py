"""Side-by-side timing: variants interleaved within each repeat, medians after warm-up, and
progress with an ETA (the machine facts a measurement must be read with: gn_det.utils.machine).

Interleaving matters on a shared machine: load from other processes changes over seconds, and
timing variant A's repeats before B's would turn that drift into a false A/B ratio. It also pairs
the samples (the i-th of each variant ran side by side), which is what `paired_ratio` uses: the
median of the per-pair ratios with a bootstrap confidence interval, so that a ratio is read with
the noise it was measured in.
"""
import random
import statistics
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Sequence


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
                clock: Callable[[], float] = time.perf_counter,
                every: int = 1) -> Dict[str, List[float]]:
    """Seconds (of `clock`) per call of each variant, `repeats` samples each: after `warmup`
    untimed calls of every variant, each repeat calls every variant once, starting one variant
    later each time so that no variant always runs first (after another variant's cache /
    allocator state). Progress: a line every `every` repeats and after the last."""
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
        if progress and ((r + 1) % every == 0 or r + 1 == repeats):
            elapsed = time.perf_counter() - start
            print(f"  {label}[{r + 1}/{repeats}] {eta(r + 1, repeats, elapsed)}", flush=True)
    return samples


def medians(samples: Mapping[str, List[float]]) -> Dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def ratio(num: float, den: float, digits: int = 3) -> float:
    return round(num / den, digits) if den > 0 else float("nan")


# ------------------------------------------------------------------------ ratios with intervals

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


class Ratio(NamedTuple):
    """A ratio of paired samples: the median of the per-pair ratios, and its confidence interval
    [low, high] (percentile bootstrap over the pairs); `pairs` = how many."""

    ratio: float
    low: float
    high: float
    pairs: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self) -> str:
        """'1.003x [0.991, 1.015]' (the interval at CONFIDENCE)."""
        return f"{self.ratio:.3f}x [{self.low:.3f}, {self.high:.3f}]"

    def as_dict(self, digits: int = 4) -> Dict[str, float]:
        return {"ratio": round(self.ratio, digits), "low": round(self.low, digits),
                "high": round(self.high, digits), "pairs": self.pairs}


def paired_ratio(num: Sequence[float], den: Sequence[float], confidence: float = CONFIDENCE,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Ratio:
    """num[i] / den[i] for samples taken side by side, summarized as the median of the per-pair
    ratios (robust to a stall hitting one sample), with a percentile-bootstrap interval: the pairs
    resampled with replacement `resamples` times (seeded, so a result file reproduces)."""
    if len(num) != len(den) or not num:
        raise ValueError(f"paired_ratio needs pairs: got {len(num)} and {len(den)} samples")
    ratios = [a / b if b > 0 else float("nan") for a, b in zip(num, den)]
    if any(r != r for r in ratios):
        return Ratio(float("nan"), float("nan"), float("nan"), len(ratios))
    point = statistics.median(ratios)
    if len(ratios) == 1:
        return Ratio(point, point, point, 1)
    rng = random.Random(seed)
    n = len(ratios)
    boot = sorted(statistics.median(rng.choices(ratios, k=n)) for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = boot[int(tail * (resamples - 1))]
    high = boot[int(round((1 - tail) * (resamples - 1)))]
    return Ratio(point, low, high, n)
