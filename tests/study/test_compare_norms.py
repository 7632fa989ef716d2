"""tools/compare_norms.py end to end on a tiny grid (gn_all x 1, 2 images per GPU x 2 seeds, a
few iterations at 64 px): outputs, the per-cell scaling, shared initialization per seed, progress
lines, skipping finished cells on a rerun, the tables rebuilt from results.json alone, the
controlled design's plan, and one-line errors for bad flags."""
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


def tiny_args(ds, out, flags=(), opts=(), budget=("--max-images", "4")):
    """The tiny grid's command line, with more `flags` (later ones win) and trailing `opts`."""
    return ["--presets", "gn_all", "--batches", "1,2", "--seeds", "2", *budget,
            "--warmup-images", "2", "--steps", "0.5", "--jobs", "2", "--threads", "1",
            "--out", str(out),
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


def cell(grid, batch, seed=0):
    return grid["out"] / "budget" / "gn_all" / f"bs{batch}" / f"seed{seed}"


CELLS = [(1, 0), (2, 0), (1, 1), (2, 1)]  # (batch, seed), in grid order: seed-major


@pytest.mark.slow
def test_outputs_are_written(grid):
    out = grid["out"] / "budget"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["design"], r["preset"], r["batch"], r["seed"], r["status"]) for r in rows] == [
        ("budget", "gn_all", str(b), str(s), "done") for b, s in CELLS]
    assert all(float(r["AP"]) >= 0 and float(r["peak_rss_mb"]) > 100 for r in rows)
    assert rows[0]["folder"] == "budget/gn_all/bs1/seed0"  # relative to --out: committable
    data = json.loads((out / "results.json").read_text())
    assert data["grid"]["batches"] == [1, 2] and data["grid"]["schedule"]["images"] == 4
    assert data["grid"]["seeds"] == [0, 1] and data["grid"]["design"] == "budget"
    assert data["machine"]["cores"] >= 1 and len(data["cells"]) == 4
    md = (out / "results.md").read_text()
    assert "| gn_all " in md and "| 1 img/GPU " in md and "| 2 img/GPU " in md
    assert " ± " in md and "(2) " in md and "paired by seed, n = 2" in md
    assert md.startswith("Command: `") and "Machine: " in md and "budget design" in md
    used = data["grid"]["precision_used"]  # what MODEL.PRECISION resolved to on this machine
    assert used.split()[0] in ("fp32", "bf16") and f"run as {used}." in md
    for name in ("ap_vs_batch.png", "ap50_vs_batch.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
    for b, s in CELLS:
        folder = cell(grid, b, s)
        assert (folder / "inference" / "cn_val" / "metrics.json").is_file()
        assert (folder / "model_final.pth").is_file()
        assert not list(folder.glob("model_0*.pth"))  # intermediate checkpoints dropped


@pytest.mark.slow
def test_each_cell_scales_lr_iterations_and_warmup(grid):
    expected = {1: (1, 0.0025, 4, 2, [2]), 2: (2, 0.005, 2, 1, [1])}
    for b, s in CELLS:
        ims, lr, max_iter, warmup, steps = expected[b]
        config = yaml.safe_load((cell(grid, b, s) / "cell.yaml").read_text())
        solver = config["SOLVER"]
        assert (solver["IMS_PER_BATCH"], solver["ACCUMULATE_STEPS"], solver["MAX_ITER"],
                solver["WARMUP_ITERS"], list(solver["STEPS"])) == (ims, 1, max_iter, warmup,
                                                                    steps)
        assert solver["BASE_LR"] == pytest.approx(lr) and config["SEED"] == s
        result = json.loads((cell(grid, b, s) / "result.json").read_text())
        assert result["iterations"] == max_iter and result["images"] == 4
        assert result["threads"] == 1 and result["seed"] == s


@pytest.mark.slow
def test_cells_of_a_seed_start_from_the_same_weights(grid):
    digests = {s: {json.loads((cell(grid, b, s) / "result.json").read_text())["init_digest"]
                   for b in (1, 2)} for s in (0, 1)}
    assert [len(d) for d in digests.values()] == [1, 1] and digests[0] != digests[1]


@pytest.mark.slow
def test_progress_line_per_cell_with_eta(grid):
    lines = grid["first"].stdout.splitlines()
    for i, (b, s) in enumerate(CELLS):
        tag = f"[{i + 1}/4] gn_all/bs{b}/seed{s}"
        assert any(line.startswith(f"{tag}: started, ") for line in lines)
        done = [line for line in lines if line.startswith(f"{tag}: AP ")]
        assert len(done) == 1 and " s/it)" in done[0] and "peak RSS" in done[0]
    assert any("ETA " in line for line in lines) and "grid done" in grid["first"].stdout


@pytest.mark.slow
def test_rerun_skips_finished_cells(grid):
    before = {c: os.stat(cell(grid, *c) / "result.json").st_mtime_ns for c in CELLS}
    again = run_tool(grid["args"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, skipped: AP ") == 4
    assert "started" not in again.stdout
    assert before == {c: os.stat(cell(grid, *c) / "result.json").st_mtime_ns for c in CELLS}


@pytest.mark.slow
def test_tables_and_plots_rebuild_from_results_json_alone(grid, tmp_path, capsys):
    """What docs/study commits (results.json) rebuilds every output, without a cell folder."""
    source = tmp_path / "committed.json"
    source.write_text((grid["out"] / "budget" / "results.json").read_text())
    out = tmp_path / "rebuilt"
    assert compare_norms.main(["--rebuild-from", str(source), "--out", str(out)]) == 0
    assert "rebuilt the tables and plots of 4 cells" in capsys.readouterr().out
    for name in ("results.csv", "results.md"):
        original = (grid["out"] / "budget" / name).read_text().splitlines()
        assert (out / "budget" / name).read_text().splitlines()[1:] == original[1:], name
    assert (out / "budget" / "ap_vs_batch.png").is_file()


@pytest.mark.slow
def test_a_committed_results_json_continues_the_study_elsewhere(grid, tiny_shapes, tmp_path):
    """--reuse-from: another checkout (a new --out) takes the finished cells instead of training
    them, and a grid with one more seed trains only that seed's cells."""
    source = tmp_path / "committed.json"
    source.write_text((grid["out"] / "budget" / "results.json").read_text())
    out = tmp_path / "elsewhere"
    r = run_tool(tiny_args(tiny_shapes, out, ["--seeds", "3", "--reuse-from", str(source)]))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count(f"taken from {source}: AP ") == 4
    assert r.stdout.count(": started, ") == 2 and "seed2: started" in r.stdout
    data = json.loads((out / "budget" / "results.json").read_text())
    original = json.loads(source.read_text())["cells"]
    assert [c["AP"] for c in data["cells"][:4]] == [c["AP"] for c in original]


@pytest.fixture(scope="module")
def tool():
    return compare_norms


@pytest.mark.parametrize("flags, message", [
    (["--batches", "0"], "argument --batches: '0': batch sizes are distinct integers >= 1"),
    (["--batches", "1,x"], "argument --batches: '1,x' is not a comma-separated list"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--epochs", "2", "--max-images", "8"], "--epochs and --max-images both set the image"),
    (["--design", "other"], "argument --design: invalid choice: 'other'"),
    (["--min-steps", "3", "--min-steps-batch", "2"], "--min-steps-batch B (B >= 1) replaces"),
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
    (["--reference", "bn_all"], [], "--reference 'bn_all' is not one of the grid's presets"),
    (["--design", "controlled", "--effective-batch", "3"], [],
     "--effective-batch 3: the controlled design accumulates"),
    (["--max-images", "5"], [], "--max-images 5 is not a multiple of batch 2"),
    (["--config", "missing.yaml"], [], "--config missing.yaml: no such file"),
    (["--reuse-from", "missing.json"], [], "missing.json: no such --reuse-from results file"),
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
    assert out[0].startswith("gn_all/bs1/seed0: 4 iterations x 1 micro-step(s), BASE_LR 0.0025, "
                             "warm-up 2 it, steps [2]")
    assert out[1].startswith("gn_all/bs2/seed0: 2 iterations x 1 micro-step(s), BASE_LR 0.005, "
                             "warm-up 1 it, steps [1]")
    assert out[3].endswith("budget/gn_all/bs2/seed1") and len(out) == 4
    assert not (tmp_path / "out").exists()


def test_dry_run_of_the_controlled_design_and_an_epoch_budget(tool, tiny_shapes, tmp_path,
                                                               capsys):
    """--epochs 1 on the 8 training images, an optimizer batch of 2: 8 images, 4 steps."""
    tool.main(tiny_args(tiny_shapes, tmp_path / "out", ["--design", "controlled", "--dry-run"],
                        budget=("--epochs", "1")))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("gn_all/bs1/seed0: 4 iterations x 2 micro-step(s), BASE_LR 0.005, ")
    assert out[1].startswith("gn_all/bs2/seed0: 4 iterations x 1 micro-step(s), BASE_LR 0.005, ")
    assert out[0].endswith("controlled/gn_all/bs1/seed0")


def test_budget_floor_from_a_reference_batch(tool, tiny_shapes, tmp_path, capsys):
    """--min-steps-batch 1: the 2-image cells get as many steps as the 1-image ones (4)."""
    tool.main(tiny_args(tiny_shapes, tmp_path / "out", ["--min-steps-batch", "1", "--dry-run"]))
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("gn_all/bs2/seed0: 4 iterations x 1 micro-step(s), BASE_LR 0.005")


def test_user_errors_print_one_line_from_the_command_line(tiny_shapes, tmp_path):
    r = run_tool(tiny_args(tiny_shapes, tmp_path / "out", ["--presets", "nope"]))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "compare_norms: error: --presets: unknown preset 'nope'; valid: frozenbn, bn_all, "
        "gn_fpn_head, gn_all, gnws_all, brn_all, frn_all, evonorm_all (or 'none' with --config "
        "FILE) (rerun with --debug for the traceback)"]
