"""gn_det.benchmark.eval_speed on a tiny synthetic set: both variants run in their own processes,
the ratios and verdicts are reported, the import probe sees no heavy module."""
import argparse

import pytest

from gn_det.benchmark import eval_speed


@pytest.mark.slow
@pytest.mark.multiproc
def test_runs_and_reports(tmp_path):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=1)
    eval_speed.add_arguments(ap)
    args = ap.parse_args(["--sizes", "12", "--data-dir", str(tmp_path)])
    result = eval_speed.run(args)
    size = result["sizes"]["12"]
    for variant in ("pycocotools", "evaluate"):
        assert size["median"][variant]["cpu_s"] > 0
    assert set(size["ratios"]) == {"wall", "cpu", "peak_rss"}
    assert result["import"]["heavy_modules"] == []
    assert result["import_with_engine"]["heavy_modules"] == []
    labels = eval_speed.target_lines(result)
    assert any("import CPU seconds" in line for line in labels)
    assert (tmp_path / "out_12" / "metrics.json").is_file()  # the tool's run really ran
    before = (tmp_path / "gt_12.json").stat().st_mtime_ns
    eval_speed.synthetic_set(12, str(tmp_path))  # generated once, then reused
    assert (tmp_path / "gt_12.json").stat().st_mtime_ns == before
