"""tools/benchmark.py: the registry and the eval benchmark on a tiny problem (no timing checks)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("gn_det_benchmark", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_runs_and_reports(benchmark, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(["eval", "--images", "12", "--dets", "20", "--classes", "4",
                           "--repeats", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["eval"]
    assert result["images"] == 12 and result["detections"] == 12 * 20 and result["repeats"] == 2
    assert result["cocoeval_plus_pr_s"] >= result["cocoeval_s"] > 0
    assert "[2/2]" in capsys.readouterr().out


def test_registry_and_arguments(benchmark):
    assert "eval" in benchmark.BENCHMARKS and benchmark.BENCHMARKS["eval"].help
    assert benchmark.parse_args(["eval", "--quick"]).quick
    with pytest.raises(SystemExit):
        benchmark.parse_args(["nope"])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["eval", "--repeats", "0"])
