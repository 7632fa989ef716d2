"""tools/compare_norms.py end to end on a tiny grid (gn_all x 1, 2 images per GPU, a few
iterations at 64 px): outputs, the per-cell scaling, shared initialization, progress lines,
skipping finished cells on a rerun, and one-line errors for bad flags."""
import csv
import json
import os
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from cli_harness import TINY_MODEL_OPTS
from gn_det.commands import compare_norms

from helpers import REPO

TOOL = REPO / "tools" / "compare_norms.py"


def tiny_args(ds, out, flags=(), opts=()):
    """The tiny grid's command line, with more `flags` (later ones win) and trailing `opts`."""
    return ["--presets", "gn_all", "--batches", "1,2", "--max-images", "4", "--warmup-images", "2",
            "--steps", "0.5", "--jobs", "2", "--threads", "1", "--out", str(out),
            "--coco-format", "cn_train", f"{ds}/annotations/train.json", f"{ds}/train",
            "--coco-format", "cn_val", f"{ds}/annotations/val.json", f"{ds}/val",
            "--dataset", "cn_train", "cn_val", *flags, *TINY_MODEL_OPTS, *opts]


def run_tool(args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))


@pytest.fixture(scope="module")
def grid(tiny_shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare_norms") / "out"
    args = tiny_args(tiny_shapes, out)
    first = run_tool(args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return {"out": out, "args": args, "first": first}


def cell(grid, batch):
    return grid["out"] / "gn_all" / f"bs{batch}"


def test_outputs_are_written(grid):
    out = grid["out"]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["preset"], r["batch"], r["status"]) for r in rows] == [
        ("gn_all", "1", "done"), ("gn_all", "2", "done")]
    assert all(float(r["AP"]) >= 0 and float(r["peak_rss_mb"]) > 100 for r in rows)
    data = json.loads((out / "results.json").read_text())
    assert data["grid"]["batches"] == [1, 2] and data["grid"]["schedule"]["images"] == 4
    assert data["machine"]["cores"] >= 1 and len(data["cells"]) == 2
    md = (out / "results.md").read_text()
    assert "| gn_all " in md and "| 1 img/GPU " in md and "| 2 img/GPU " in md
    assert md.startswith("Command: `") and "Machine: " in md
    with Image.open(out / "ap_vs_batch.png") as image:
        assert image.format == "PNG"
    for b in (1, 2):
        folder = cell(grid, b)
        assert (folder / "inference" / "cn_val" / "metrics.json").is_file()
        assert (folder / "model_final.pth").is_file()
        assert not list(folder.glob("model_0*.pth"))  # intermediate checkpoints dropped


def test_each_cell_scales_lr_iterations_and_warmup(grid):
    expected = {1: (1, 0.0025, 4, 2, [2]), 2: (2, 0.005, 2, 1, [1])}
    seeds = set()
    for b, (ims, lr, max_iter, warmup, steps) in expected.items():
        solver = yaml.safe_load((cell(grid, b) / "cell.yaml").read_text())["SOLVER"]
        assert (solver["IMS_PER_BATCH"], solver["MAX_ITER"], solver["WARMUP_ITERS"],
                list(solver["STEPS"])) == (ims, max_iter, warmup, steps)
        assert solver["BASE_LR"] == pytest.approx(lr)
        seeds.add(yaml.safe_load((cell(grid, b) / "cell.yaml").read_text())["SEED"])
        result = json.loads((cell(grid, b) / "result.json").read_text())
        assert result["iterations"] == max_iter and result["images"] == 4
        assert result["threads"] == 1
    assert len(seeds) == 1


def test_cells_start_from_the_same_weights(grid):
    digests = {json.loads((cell(grid, b) / "result.json").read_text())["init_digest"]
               for b in (1, 2)}
    assert len(digests) == 1


def test_progress_line_per_cell_with_eta(grid):
    lines = grid["first"].stdout.splitlines()
    for b in (1, 2):
        tag = f"[{b}/2] gn_all/bs{b}"
        assert any(line.startswith(f"{tag}: started, ") for line in lines)
        done = [line for line in lines if line.startswith(f"{tag}: AP ")]
        assert len(done) == 1 and " s/it)" in done[0] and "peak RSS" in done[0]
    assert any("ETA " in line for line in lines) and "grid done" in grid["first"].stdout


def test_rerun_skips_finished_cells(grid):
    before = {b: os.stat(cell(grid, b) / "result.json").st_mtime_ns for b in (1, 2)}
    again = run_tool(grid["args"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, skipped: AP ") == 2
    assert "started" not in again.stdout
    assert before == {b: os.stat(cell(grid, b) / "result.json").st_mtime_ns for b in (1, 2)}


@pytest.fixture(scope="module")
def tool():
    return compare_norms


@pytest.mark.parametrize("flags, message", [
    (["--batches", "0"], "argument --batches: '0': batch sizes are distinct integers >= 1"),
    (["--batches", "1,x"], "argument --batches: '1,x' is not a comma-separated list"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--coco-format", "a", "b.json", "c"], "name the ones to use with --dataset TRAIN TEST"),
    (["MODEL.X"], "trailing opts must be KEY VALUE pairs"),
])
def test_bad_flags_are_one_line_usage_errors(tool, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        tool.main(flags)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("compare_norms: error: ") and message in err


@pytest.mark.parametrize("flags, opts, message", [
    (["--presets", "gn_all,bogus"], [], "unknown preset 'bogus'; valid: frozenbn, bn_all, "),
    (["--max-images", "5"], [], "--max-images 5 is not a multiple of batch 2"),
    (["--config", "missing.yaml"], [], "--config missing.yaml: no such file"),
    ([], ["SOLVER.MAX_ITER", "3"], "SOLVER.MAX_ITER is set per cell by the grid"),
    ([], ["MODEL.RETINANET.NUM_CLASSES", "9"], "dataset 'cn_train' has 4 classes"),
])
def test_bad_grids_are_refused_before_any_cell_runs(tool, tiny_shapes, tmp_path, flags, opts,
                                                    message):
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        tool.main(tiny_args(tiny_shapes, out, flags, opts))
    # No cell folder; at most the grid's dataset cache (the verdicts of the images it checked).
    assert not out.exists() or os.listdir(out) == ["dataset_cache"]


def test_dry_run_prints_the_plan(tool, tiny_shapes, tmp_path, capsys):
    tool.main(tiny_args(tiny_shapes, tmp_path / "out", ["--dry-run"]))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("gn_all/bs1: 4 iterations, BASE_LR 0.0025, warm-up 2 it, steps [2]")
    assert out[1].startswith("gn_all/bs2: 2 iterations, BASE_LR 0.005, warm-up 1 it, steps [1]")
    assert not (tmp_path / "out").exists()


def test_user_errors_print_one_line_from_the_command_line(tiny_shapes, tmp_path):
    r = run_tool(tiny_args(tiny_shapes, tmp_path / "out", ["--presets", "nope"]))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "compare_norms: error: --presets: unknown preset 'nope'; valid: frozenbn, bn_all, "
        "gn_fpn_head, gn_all, gnws_all (or 'none' with --config FILE) (rerun with --debug for "
        "the traceback)"]
