"""gn_det.study.ap_plot: ap_vs_batch.png, one line per preset on a log2 batch axis."""
import pytest
from PIL import Image

from gn_det.study import ap_plot

ROWS = [
    {"preset": "bn_all", "batch": 8, "status": "done", "AP": 30.0},
    {"preset": "bn_all", "batch": 1, "status": "diverged", "AP": None},
    {"preset": "bn_all", "batch": 2, "status": "done", "AP": 12.0},
    {"preset": "gn_all", "batch": 1, "status": "done", "AP": 28.0},
    {"preset": "gn_all", "batch": 2, "status": "failed"},
    {"preset": "gn_all", "batch": 8, "status": "done", "AP": 29.0},
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


def test_lines_per_preset_in_batch_order(tmp_path, captured):
    path = ap_plot.plot_ap_vs_batch(ROWS, ["bn_all", "gn_all"], [1, 2, 4, 8],
                                    str(tmp_path / "ap_vs_batch.png"), "a title")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 400
    ax = captured[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["bn_all"].get_xdata()) == [2, 8]  # diverged bs1 is not a point on it
    assert list(lines["bn_all"].get_ydata()) == [12.0, 30.0]
    assert list(lines["gn_all"].get_xdata()) == [1, 8]  # failed bs2 left out
    crosses = lines["diverged (loss NaN/inf)"]
    assert list(crosses.get_xdata()) == [1] and list(crosses.get_ydata()) == [0.0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [1, 2, 4, 8]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert ax.get_title() == "a title"


def test_empty_grid_still_draws(tmp_path):
    path = ap_plot.plot_ap_vs_batch([], ["gn_all"], [1, 8], str(tmp_path / "p.png"))
    with Image.open(path) as image:
        assert image.format == "PNG"
