"""gn_det.study.runner: per-cell processes (exit codes, peak RSS, crashes recorded as failed),
folder bookkeeping for skip / restart / resume, and the grid ETA. Real training is in
test_compare_norms.py; here the cell processes are plain Python commands."""
import json
import os
import sys

import pytest

from gn_det.study.grid import PRESETS, Cell
from gn_det.study.runner import (FAILED, RESULT, Eta, cell_record, config_differences,
                                 config_digest, describe, format_seconds, prepare_folder,
                                 remove_checkpoints, reusable_row, run_cell, run_grid,
                                 run_process)
from gn_det.study.train_cell import CELL_CONFIG, TRAIN_RESULT

CELL = Cell(PRESETS["gn_all"], 2, seed=1, design="controlled")
CONFIG = "SOLVER:\n  BASE_LR: 0.005\n  MAX_ITER: 8\nOUTPUT_DIR: /a\n"


def python(code):
    return [sys.executable, "-c", code]


def test_run_process_reports_exit_code_and_its_own_peak_rss(tmp_path):
    log = tmp_path / "p.log"
    big = run_process(python("import sys, time\nb = bytearray(300 * 2**20)\nb[::4096] = "
                             "b'x' * len(b[::4096])\ndel b\nprint('allocated')\ntime.sleep(0.3)\n"
                             "sys.exit(3)"), str(log), poll_s=0.05)
    assert big["rc"] == 3 and big["wall_s"] > 0
    assert 300 <= big["peak_rss_mb"] < 400  # the peak, though freed before the end
    assert "allocated" in log.read_text()
    # Not the runner's own memory (a child's ru_maxrss starts from its parent's peak).
    small = run_process(python("import time; time.sleep(0.3)"), str(log), poll_s=0.05)
    assert small["rc"] == 0 and small["peak_rss_mb"] < 100


def test_run_process_reports_the_child_cpu_seconds(tmp_path):
    log = str(tmp_path / "p.log")
    busy = run_process(python("import time\nwhile time.process_time() < 0.6: pass"), log)
    idle = run_process(python("import time; time.sleep(0.6)"), log)
    assert busy["cpu_s"] >= 0.6 and idle["cpu_s"] < 0.5  # sleeping is not CPU time


def test_run_process_sets_threads(tmp_path):
    log = tmp_path / "p.log"
    run_process(python("import os; print('threads', os.environ['OMP_NUM_THREADS'])"), str(log),
                threads=1)
    assert "threads 1" in log.read_text()


def run_cell_with(code, tmp_path, cfg):
    """run_cell on a fresh cell folder with `code` as the cell's process; (folder, record)."""
    folder = str(tmp_path / "cell")
    os.makedirs(folder)
    return folder, run_cell(CELL, cfg, folder, command=python(code))


def test_crashed_cell_is_failed_with_its_last_line(tmp_path, cfg_for_cell):
    folder, record = run_cell_with("import sys; print('ValueError: bad thing'); sys.exit(1)",
                                   tmp_path, cfg_for_cell)
    assert record["status"] == "failed"
    assert record["error"] == "exit code 1: ValueError: bad thing"
    with open(os.path.join(folder, FAILED)) as f:
        assert json.load(f)["error"] == record["error"]
    assert not os.path.exists(os.path.join(folder, RESULT))
    assert (record["preset"], record["batch"], record["max_iter"]) == ("gn_all", 2, 3)
    assert (record["design"], record["seed"], record["accumulate_steps"],
            record["effective_batch"], record["images"]) == ("controlled", 1, 2, 4, 12)


def test_killed_cell_names_the_signal(tmp_path, cfg_for_cell):
    _, record = run_cell_with("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                              tmp_path, cfg_for_cell)
    assert record["error"] == "killed by SIGKILL (out of memory?)"


def test_clean_exit_without_a_result_is_failed(tmp_path, cfg_for_cell):
    _, record = run_cell_with("pass", tmp_path, cfg_for_cell)
    assert record["error"] == f"exit code 0 but no {TRAIN_RESULT}"


@pytest.fixture
def cfg_for_cell():
    from detectron2.config import get_cfg

    from gn_det.config import add_gn_det_config

    cfg = add_gn_det_config(get_cfg())
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR, cfg.SOLVER.ACCUMULATE_STEPS = 3, 0.005, 2
    return cfg


def finished(folder, config=CONFIG, **extra):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, CELL_CONFIG), "w") as f:
        f.write(config)
    result = dict({"status": "done", "peak_rss_mb": 900.0, "wall_s": 10.0, "AP": 12.0}, **extra)
    with open(os.path.join(folder, RESULT), "w") as f:
        json.dump(result, f)
    return result


def test_finished_cell_is_reused(tmp_path):
    folder = str(tmp_path / "cell")
    result = finished(folder)
    assert prepare_folder(CELL, folder, CONFIG, resume=False) == result
    assert prepare_folder(CELL, folder, CONFIG.replace("/a", "/moved"), resume=False) == result


def test_finished_cell_with_another_config_is_an_error(tmp_path):
    folder = str(tmp_path / "cell")
    finished(folder)
    with pytest.raises(ValueError, match=r"holds cell gn_all/bs2/seed1 run with another config "
                                         r"\(SOLVER.BASE_LR: 0.005 -> 0.01\); use another --out"):
        prepare_folder(CELL, folder, CONFIG.replace("0.005", "0.01"), resume=False)


def test_incomplete_result_and_failed_cells_run_again(tmp_path):
    folder = str(tmp_path / "cell")
    finished(folder, status="failed")
    assert prepare_folder(CELL, folder, CONFIG, resume=False) is None
    assert sorted(os.listdir(folder)) == [CELL_CONFIG]
    os.unlink(os.path.join(folder, CELL_CONFIG))
    finished(folder)
    os.unlink(os.path.join(folder, RESULT))
    with open(os.path.join(folder, RESULT), "w") as f:
        f.write('{"status": "done"')  # cut short
    assert prepare_folder(CELL, folder, CONFIG, resume=False) is None


def test_interrupted_cell_restarts_or_resumes(tmp_path):
    folder = str(tmp_path / "cell")
    for resume, kept in ((True, True), (False, False)):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, CELL_CONFIG), "w") as f:
            f.write(CONFIG)
        for name in ("model_0000003.pth", "last_checkpoint", TRAIN_RESULT):
            open(os.path.join(folder, name), "w").close()
        assert prepare_folder(CELL, folder, CONFIG, resume=resume) is None
        assert os.path.exists(os.path.join(folder, "last_checkpoint")) is kept
        assert not os.path.exists(os.path.join(folder, TRAIN_RESULT))
        with open(os.path.join(folder, CELL_CONFIG)) as f:
            assert f.read() == CONFIG
    with pytest.raises(ValueError, match="run with another config"):  # resume needs the same
        prepare_folder(CELL, folder, CONFIG.replace("8", "9"), resume=True)


def test_a_folder_that_is_not_a_cell_is_never_cleared(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / "precious.txt").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a grid cell"):
        prepare_folder(CELL, str(folder), CONFIG, resume=False)
    assert (folder / "precious.txt").exists()


def test_config_differences_ignores_output_dir():
    assert config_differences(CONFIG, CONFIG.replace("/a", "/b")) == []
    assert config_differences(CONFIG, CONFIG.replace("MAX_ITER: 8", "MAX_ITER: 4")) == \
        ["SOLVER.MAX_ITER: 8 -> 4"]


def test_eta_uses_same_batch_cells_then_the_mean():
    eta = Eta()
    assert eta.remaining([1, 2]) is None and eta.describe([1]) == "ETA ?"
    eta.add(1, 100.0)
    eta.add(1, 200.0)
    eta.add(8, 30.0)
    assert eta.remaining([1, 8]) == pytest.approx(150 + 30)
    assert eta.remaining([2]) == pytest.approx(110)  # no bs2 yet: mean of all cells
    assert eta.describe([1, 1], jobs=2) == "ETA 2m30s"
    assert eta.describe([]) == "grid done"
    assert format_seconds(3725) == "1h02m" and format_seconds(59.6) == "1m00s"


def test_finished_cells_keep_the_final_weights_unless_asked_not_to(tmp_path):
    names = ["model_0000004.pth", "model_final.pth", "last_checkpoint", "result.json"]
    for final, kept in ((False, ["last_checkpoint", "model_final.pth", "result.json"]),
                        (True, ["result.json"])):
        for name in names:
            (tmp_path / name).write_text("x")
        remove_checkpoints(str(tmp_path), final=final)
        assert sorted(os.listdir(tmp_path)) == kept


def test_describe_outcomes():
    assert describe({"status": "done", "AP": 12.34, "AP50": None}) == "AP 12.3  AP50 -"
    assert describe({"status": "diverged", "start_iter": 10, "iterations": 5}) == \
        "diverged after 15 iterations"
    assert describe({"status": "failed", "error": "exit code 1: boom"}) == \
        "FAILED (exit code 1: boom)"


def test_config_digest_ignores_output_dir_only():
    assert config_digest(CONFIG) == config_digest(CONFIG.replace("/a", "/elsewhere"))
    assert config_digest(CONFIG) != config_digest(CONFIG.replace("0.005", "0.006"))


class TwoCells:
    """A grid's interface for run_grid: two cells of one preset, configs from `cfg`."""

    def __init__(self, cfg):
        self.cfg = cfg

    def cells(self):
        return [Cell(PRESETS["bn_all"], 1, seed=0, design="controlled"),
                Cell(PRESETS["bn_all"], 2, seed=0, design="controlled")]

    def cell_cfg(self, cell, out):
        cfg = self.cfg.clone()
        cfg.SOLVER.ACCUMULATE_STEPS = 2 // cell.batch
        cfg.OUTPUT_DIR = cell.folder(out)
        return cfg


def test_rows_of_an_earlier_results_json_stand_in_for_matching_cells(tmp_path, cfg_for_cell):
    grid = TwoCells(cfg_for_cell)
    earlier = str(tmp_path / "other_checkout")
    rows = []
    for cell in grid.cells():  # as a results.json written elsewhere holds them
        record = cell_record(cell, grid.cell_cfg(cell, earlier), "controlled/x")
        rows.append(dict(record, status="done", AP=30.0 + cell.batch, AP50=60.0,
                         peak_rss_mb=900.0, wall_s=5.0))
    assert reusable_row(cell_record(grid.cells()[0], grid.cell_cfg(grid.cells()[0], "o"), "f"),
                        rows) is rows[0]
    rows[1]["train_precision"] = "bf16" if rows[1]["train_precision"] == "fp32" else "fp32"
    lines = []
    out = str(tmp_path / "out")
    result = run_grid(grid, out, log=lines.append, reuse=rows, reuse_source="docs/r.json",
                      command=python("import sys; sys.exit(3)"))
    # the first cell is taken (and written, so a rerun skips it); the second trained in another
    # precision, so it runs (and fails here: the command exits 3)
    assert [(r["batch"], r["status"], r.get("AP")) for r in result] == [
        (1, "done", 31.0), (2, "failed", None)]
    assert lines[0].endswith("bn_all/bs1/seed0: taken from docs/r.json: AP 31.0  AP50 60.0")
    with open(os.path.join(grid.cells()[0].folder(out), RESULT)) as f:
        assert json.load(f)["folder"] == grid.cells()[0].folder(out)
    rows[0]["config_digest"] = None  # a row from before digests: never taken
    assert reusable_row(cell_record(grid.cells()[0], grid.cell_cfg(grid.cells()[0], "o"), "f"),
                        rows) is None
    lines.clear()
    run_grid(grid, out, log=lines.append, command=python("import sys; sys.exit(3)"))
    assert lines[0].endswith("bn_all/bs1/seed0: finished earlier, skipped: AP 31.0  AP50 60.0")
