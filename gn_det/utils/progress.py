"""Progress and ETA for long work, one helper for the whole package.

`Progress` counts units of work (images, cells, repeats) and reports done/total, elapsed time and
an ETA: as a tqdm bar where stderr is a terminal, else as a log line at most every `every`
seconds (logs, CI and pipes get lines, not carriage returns). `Phases` names the steps of work
that has no natural unit ("[2/5] matching (3.1 s)"). The ETA is measured from the first unit
done, not from construction, so set-up before the loop (loading, IoU tables) does not inflate it.
"""
import logging
import sys
import time
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

T = TypeVar("T")
logger = logging.getLogger("gn_det.progress")


def format_seconds(seconds: Optional[float]) -> str:
    """'42s', '3m05s', '1h02m'; '?' for an unknown duration."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    if hours:
        return f"{hours}h{rest // 60:02d}m"
    return f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s"


def eta_text(done: float, total: float, elapsed: float) -> str:
    """'ETA 12s' while work is left (from the mean rate so far), 'total 40s' once done."""
    if done >= total:
        return f"total {format_seconds(elapsed)}"
    left = elapsed / done * (total - done) if done > 0 else None
    return f"ETA {format_seconds(left)}"


def _interactive() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """Counts `total` units of `unit` under `desc`.

    `log`: where text lines go (default: the gn_det.progress logger at INFO; pass `print` in a
    CLI that prints). `bar`: a tqdm bar (None: only where stderr is a terminal). `every`: seconds
    between log lines (the first after `every` seconds, the last always). `min_total`: below it,
    report nothing (a handful of images needs no bar); `quiet`: nothing at all. Use as a context
    manager, or call `close()`.
    """

    def __init__(self, total: float, desc: str, unit: str = "it", *,
                 log: Optional[Callable[[str], object]] = None, bar: Optional[bool] = None,
                 every: float = 5.0, min_total: float = 0, quiet: bool = False):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.done = 0.0
        self._log = log or logger.info
        self._quiet = quiet or total < min_total
        self._bar = None
        if not self._quiet and (_interactive() if bar is None else bar):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, mininterval=1.0)
        self._start = time.perf_counter()
        self._first: Optional[float] = None  # (time, done) when the first unit finished
        self._first_done = 0.0
        self._last_line = self._start  # the first line after `every` seconds (or at the end)

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def eta_seconds(self) -> Optional[float]:
        """Seconds left from the rate since the first unit finished (None before two updates)."""
        if self._first is None or self.done <= self._first_done:
            return None
        rate = (time.perf_counter() - self._first) / (self.done - self._first_done)
        return rate * (self.total - self.done)

    def line(self, note: str = "") -> str:
        """'desc: 12/40 img, 30s elapsed, ETA 1m10s (note)'."""
        elapsed = self.elapsed()
        if self.done >= self.total:
            tail = f"done in {format_seconds(elapsed)}"
        else:
            tail = f"{format_seconds(elapsed)} elapsed, ETA {format_seconds(self.eta_seconds())}"
        count = f"{self.done:g}/{self.total:g} {self.unit}"
        return f"{self.desc}: {count}, {tail}" + (f" ({note})" if note else "")

    def update(self, n: float = 1, note: str = "") -> None:
        """Add `n` finished units; `note` is appended to the log line."""
        self.done += n
        now = time.perf_counter()
        if self._first is None:
            self._first, self._first_done = now, self.done
        if self._quiet:
            return
        if self._bar is not None:
            self._bar.update(n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            return
        if self.done >= self.total or now - self._last_line >= self.every:
            self._last_line = now
            self._log(self.line(note))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], total: Optional[int] = None, desc: str = "", unit: str = "it",
          **kwargs) -> Iterator[T]:
    """Yield `items`, counting each one in a Progress (kwargs: Progress's)."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, **kwargs) as progress:
        for item in items:
            yield item
            progress.update()


class Phases:
    """Named steps of one piece of work: `done(what)` logs '[2/5] what (3.1s, ETA 5s)'; `total` 0
    means the count is unknown ('[2] what (3.1s)'). The ETA is the mean step time so far times the
    steps left, or, with `weights` (one expected relative cost per step, e.g. from the input's
    size), the time so far scaled by the weight left over the weight done: steps of very
    different lengths then still give an honest first ETA. `eta_after`: the share of the total
    weight done before an ETA is shown (a first step of a few per cent is too short to time the
    rest by)."""

    def __init__(self, total: int = 0, log: Optional[Callable[[str], object]] = None,
                 prefix: str = "", weights: Optional[Sequence[float]] = None,
                 eta_after: float = 0.0):
        if weights is not None and len(weights) != total:
            raise ValueError(f"{len(weights)} weights for {total} steps")
        self.total, self.count = total, 0
        self.weights = None if weights is None else [float(w) for w in weights]
        self.eta_after = eta_after
        self._log = log or logger.info
        self._prefix = prefix
        self._start = self._step_start = time.perf_counter()

    def start(self, what: str) -> None:
        """Announce a step before it runs (for steps long enough to need it)."""
        self._step_start = time.perf_counter()
        self._log(f"{self._prefix}[{self._counter(self.count + 1)}] {what} ...")

    def done(self, what: str) -> float:
        """Log a finished step; returns its seconds (since the previous step or `start`)."""
        self.count += 1
        now = time.perf_counter()
        step, elapsed = now - self._step_start, now - self._start
        self._step_start = now
        tail = ""
        if self.total and self.count < self.total and self._share_done() >= self.eta_after:
            tail = f", {self._eta(elapsed)}"
        self._log(f"{self._prefix}[{self._counter(self.count)}] {what} ({step:.1f}s{tail})")
        return step

    def eta_seconds(self) -> Optional[float]:
        """Seconds left by the rule of the class docstring (None before the first step)."""
        elapsed = time.perf_counter() - self._start
        if not self.count:
            return None
        if self.weights is None:
            return elapsed / self.count * (self.total - self.count)
        done = sum(self.weights[:self.count])
        return elapsed * sum(self.weights[self.count:]) / done if done > 0 else None

    def _share_done(self) -> float:
        if self.weights is None:
            return self.count / self.total if self.total else 0.0
        return sum(self.weights[:self.count]) / max(sum(self.weights), 1e-12)

    def _eta(self, elapsed: float) -> str:
        if self.weights is None:
            return eta_text(self.count, self.total, elapsed)
        return f"ETA {format_seconds(self.eta_seconds())}"

    def _counter(self, i: int) -> str:
        return f"{i}/{self.total}" if self.total else str(i)
