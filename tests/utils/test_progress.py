"""gn_det.utils.progress.Phases: the ETA from the mean step time, or from the steps' weights."""
import pytest

from gn_det.utils import progress
from gn_det.utils.progress import Phases


class Clock:
    """A perf_counter that moves only when told."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", c)
    return c


def test_eta_from_mean_step_time(clock):
    lines = []
    phases = Phases(4, log=lines.append)
    clock.now += 2.0
    phases.done("a")
    assert lines[-1] == "[1/4] a (2.0s, ETA 6s)"
    assert phases.eta_seconds() == pytest.approx(6.0)


def test_eta_from_weights_scales_the_time_so_far(clock):
    lines = []
    phases = Phases(3, log=lines.append, weights=[1.0, 8.0, 1.0])
    clock.now += 0.5  # the machine runs at half the weights' speed: 1 weight unit took 0.5 s
    phases.done("small")
    assert lines[-1] == "[1/3] small (0.5s, ETA 4s)"  # 9 units left at 0.5 s each
    clock.now += 4.0
    phases.done("big")
    assert phases.eta_seconds() == pytest.approx(0.5)
    clock.now += 0.5
    phases.done("last")
    assert lines[-1] == "[3/3] last (0.5s)"


def test_weights_must_match_the_steps():
    with pytest.raises(ValueError, match="2 weights for 3 steps"):
        Phases(3, weights=[1.0, 2.0])


def test_no_eta_before_a_share_of_the_weight_is_done(clock):
    lines = []
    phases = Phases(3, log=lines.append, weights=[0.2, 1.8, 8.0], eta_after=0.1)
    clock.now += 0.1
    phases.done("tiny")
    assert lines[-1] == "[1/3] tiny (0.1s)"  # 2% done: too little to time the rest by
    clock.now += 1.9
    phases.done("load")
    assert lines[-1] == "[2/3] load (1.9s, ETA 8s)"  # 20% done in 2 s: 8 s left
