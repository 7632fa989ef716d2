"""Means, 95 % intervals and paired differences over a study's seeds, and the verdict sentences
built from them.

The interval is Student's t-interval over the seeds: mean ± t(0.975, n-1) · sd / √n. With the
3-5 seeds a CPU study affords, a bootstrap would understate the spread (it resamples 3 values);
the t-interval makes no claim it cannot support, at the price of assuming roughly normal seed
noise. A difference between two cells is taken paired by seed where both have the seed (cells of
one seed share the data order, and cells of one preset share their initial weights): the interval
is the t-interval of the per-seed differences, and the difference is called real only when that
interval excludes 0.
"""
import dataclasses
import math
from typing import Dict, Mapping, Optional, Sequence

INTERVAL = "95 % t-interval over seeds"
# Student's t quantile t(0.975, df) for df = 1..30 (standard tables); beyond, the Cornish-Fisher
# expansion around the normal quantile (error < 1e-4 for df > 30).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964


def t975(df: int) -> float:
    """Student's t quantile at 0.975 with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


@dataclasses.dataclass(frozen=True)
class Summary:
    """n values: their mean, sample sd and the half-width of the 95 % t-interval (None when
    n < 2: one value has no interval)."""

    n: int
    mean: Optional[float]
    sd: Optional[float] = None
    half_width: Optional[float] = None

    @property
    def low(self) -> Optional[float]:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> Optional[float]:
        return None if self.half_width is None else self.mean + self.half_width

    def excludes_zero(self) -> bool:
        return self.half_width is not None and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 1) -> str:
        """'41.3 ± 2.1' (n >= 2), '41.3' (n = 1), '-' (none)."""
        if self.mean is None:
            return "-"
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def summarize(values: Sequence[float]) -> Summary:
    """Mean and 95 % t-interval of `values` (the seeds of one cell)."""
    n = len(values)
    if n == 0:
        return Summary(0, None)
    mean = sum(values) / n
    if n == 1:
        return Summary(1, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, sd, t975(n - 1) * sd / math.sqrt(n))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Summary:
    """a - b over the seeds both have (paired by seed), with its 95 % t-interval."""
    seeds = sorted(set(a) & set(b))
    return summarize([a[s] - b[s] for s in seeds])


def verdict(a: str, b: str, diff: Summary, unit: str = "AP") -> str:
    """'bn_all at 1 img/GPU is 4.2 ± 1.3 AP below bn_all at 8 img/GPU (paired by seed, n = 3):
    real.' — real only when the interval of the difference excludes 0."""
    if diff.mean is None:
        return f"{a} vs {b}: no seed finished in both."
    if diff.half_width is None:
        return (f"{a} vs {b}: {diff.mean:+.1f} {unit} from one seed; no interval, no verdict.")
    if diff.mean == 0 and diff.sd == 0:
        return f"{a} equals {b} in every seed (paired by seed, n = {diff.n})."
    direction = "above" if diff.mean > 0 else "below" if diff.mean < 0 else "level with"
    sure = ("real: the interval excludes 0" if diff.excludes_zero()
            else "not distinguishable from 0 at these seeds")
    return (f"{a} is {abs(diff.mean):.1f} ± {diff.half_width:.1f} {unit} {direction} {b} "
            f"(paired by seed, n = {diff.n}; interval [{diff.low:+.1f}, {diff.high:+.1f}]): "
            f"{sure}.")


def by_seed(rows: Sequence[Mapping], preset: str, batch: int, key: str = "AP") -> Dict[int, float]:
    """seed -> `key` of the finished cells of (preset, batch)."""
    return {int(r["seed"]): float(r[key]) for r in rows
            if r["preset"] == preset and int(r["batch"]) == batch and r.get("status") == "done"
            and r.get(key) is not None}
