"""gn_det.study.stats: Student's t quantile (against the t density integrated numerically), the
95 % t-interval over seeds, paired differences and the verdict sentences."""
import math

import numpy as np
import pytest

from gn_det.study.stats import (Summary, by_seed, paired_difference, summarize, t975, verdict)


def t_coverage(q: float, df: int) -> float:
    """P(|T| <= q) for Student's t with `df` degrees of freedom, by the trapezoid rule over its
    density (an independent check of the table)."""
    x = np.linspace(-q, q, 200001)
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    pdf = c * (1 + x ** 2 / df) ** (-(df + 1) / 2)
    return float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x)))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 31, 60, 200])
def test_t975_covers_95_percent(df):
    assert t_coverage(t975(df), df) == pytest.approx(0.95, abs=2e-4)


def test_t975_tends_to_the_normal_quantile_and_refuses_df_0():
    assert t975(10 ** 6) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError, match="df >= 1"):
        t975(0)


def test_summary_is_mean_and_t_interval():
    s = summarize([40.0, 42.0, 44.0])
    assert (s.n, s.mean, s.sd) == (3, 42.0, 2.0)
    assert s.half_width == pytest.approx(4.3027 * 2 / math.sqrt(3))
    assert s.format() == "42.0 ± 5.0" and (s.low, s.high) == (42.0 - s.half_width,
                                                               42.0 + s.half_width)
    assert summarize([41.25]).format() == "41.2" and summarize([41.25]).half_width is None
    assert summarize([]).format() == "-" and not summarize([1.0]).excludes_zero()


def test_paired_difference_uses_the_seeds_both_have():
    a = {0: 30.0, 1: 32.0, 2: 31.0, 7: 99.0}
    b = {0: 35.0, 1: 36.0, 2: 37.0, 5: 0.0}
    d = paired_difference(a, b)
    assert d.n == 3 and d.mean == pytest.approx(-5.0)
    assert d.excludes_zero() and d.high < 0
    # Unpaired, the same values would give a wider interval: pairing removes the seed effect.
    assert d.half_width < summarize([30.0, 32.0, 31.0]).half_width + \
        summarize([35.0, 36.0, 37.0]).half_width


def test_verdicts_call_a_difference_real_only_when_the_interval_excludes_0():
    real = verdict("bn_all at 1", "bn_all at 8", Summary(3, -4.2, 0.5, 1.3))
    assert real == ("bn_all at 1 is 4.2 ± 1.3 AP below bn_all at 8 (paired by seed, n = 3; "
                    "interval [-5.5, -2.9]): real: the interval excludes 0.")
    noise = verdict("gn_all at 1", "gn_all at 8", Summary(3, 0.8, 1.0, 2.5))
    assert "0.8 ± 2.5 AP above" in noise and noise.endswith("not distinguishable from 0 at "
                                                            "these seeds.")
    assert "one seed; no interval, no verdict" in verdict("a", "b", Summary(1, 2.0))
    assert verdict("a", "b", Summary(0, None)) == "a vs b: no seed finished in both."
    assert verdict("a", "b", Summary(2, 0.0, 0.0, 0.0)) == \
        "a equals b in every seed (paired by seed, n = 2)."


def test_by_seed_keeps_finished_cells_of_one_preset_and_batch():
    rows = [{"preset": "p", "batch": 1, "seed": 0, "status": "done", "AP": 10.0},
            {"preset": "p", "batch": "1", "seed": "1", "status": "done", "AP": "12.5"},
            {"preset": "p", "batch": 1, "seed": 2, "status": "diverged", "AP": None},
            {"preset": "p", "batch": 2, "seed": 0, "status": "done", "AP": 20.0},
            {"preset": "q", "batch": 1, "seed": 0, "status": "done", "AP": 30.0}]
    assert by_seed(rows, "p", 1) == {0: 10.0, 1: 12.5}
