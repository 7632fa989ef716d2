"""gn_det.study.ap_plot: ap_vs_batch.png, one line per preset on a log2 batch axis, the mean over
seeds with the 95 % t-interval as error bars and each seed as a dot."""
import pytest
from PIL import Image

from gn_det.study import ap_plot

ROWS = [
    {"preset": "bn_all", "batch": 8, "seed": 0, "status": "done", "AP": 30.0},
    {"preset": "bn_all", "batch": 8, "seed": 1, "status": "done", "AP": 32.0},
    {"preset": "bn_all", "batch": 8, "seed": 2, "status": "done", "AP": 34.0},
    {"preset": "bn_all", "batch": 1, "seed": 0, "status": "diverged", "AP": None},
    {"preset": "bn_all", "batch": 2, "seed": 0, "status": "done", "AP": 12.0},
    {"preset": "gn_all", "batch": 1, "seed": 0, "status": "done", "AP": 28.0},
    {"preset": "gn_all", "batch": 2, "seed": 0, "status": "failed"},
    {"preset": "gn_all", "batch": 8, "seed": 0, "status": "done", "AP": 29.0},
]


@pytest.fixture
def captured(monkeypatch):
    """The figures ap_plot draws, kept for inspection (savefig still writes the file)."""
    figures = []
    real_new_figure = ap_plot.new_figure

    def recording(**kwargs):
        figures.append(real_new_figure(**kwargs))
        return figures[-1]

    monkeypatch.setattr(ap_plot, "new_figure", recording)
    return figures


def test_means_with_error_bars_per_preset_in_batch_order(tmp_path, captured):
    path = ap_plot.plot_ap_vs_batch(ROWS, ["bn_all", "gn_all"], [1, 2, 4, 8],
                                    str(tmp_path / "ap_vs_batch.png"), "a title")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 400
    ax = captured[0].axes[0]
    containers = {c.get_label(): c for c in ax.containers}
    line, _, (bars,) = containers["bn_all"]
    nudge = ap_plot._NUDGE ** -0.5
    assert list(line.get_xdata()) == pytest.approx([2 * nudge, 8 * nudge])  # diverged bs1 out
    assert list(line.get_ydata()) == [12.0, 32.0]
    segments = bars.get_segments()  # one seed at bs2: no bar; bs8: 32 ± t(0.975, 2) * 2 / √3
    half = 4.3027 * 2.0 / 3 ** 0.5
    assert [s[0][1] for s in segments] == pytest.approx([12.0, 32.0 - half], abs=1e-3)
    assert [s[1][1] for s in segments] == pytest.approx([12.0, 32.0 + half], abs=1e-3)
    gn_line = containers["gn_all"][0]
    assert list(gn_line.get_ydata()) == [28.0, 29.0]  # failed bs2 left out
    dots = [ln for ln in ax.get_lines() if ln.get_marker() == "." and len(ln.get_xdata()) == 3]
    assert sorted(dots[0].get_ydata()) == [30.0, 32.0, 34.0]  # every seed drawn
    crosses = next(ln for ln in ax.get_lines() if ln.get_label() == "diverged (loss NaN/inf)")
    assert list(crosses.get_xdata()) == pytest.approx([nudge]) and \
        list(crosses.get_ydata()) == [0.0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [1, 2, 4, 8]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert ax.get_title() == "a title" and "t-interval" in ax.get_ylabel()


def test_empty_grid_still_draws(tmp_path):
    path = ap_plot.plot_ap_vs_batch([], ["gn_all"], [1, 8], str(tmp_path / "p.png"))
    with Image.open(path) as image:
        assert image.format == "PNG"
