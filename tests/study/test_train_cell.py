"""gn_det.study.train_cell: one cell trained and evaluated in-process on a tiny dataset; a
non-finite loss is a "diverged" result; the initial-weights digest."""
import json
import os

import pytest
import torch

from gn_det.study.grid import PRESETS, Grid, Schedule
from gn_det.study.train_cell import CELL_CONFIG, TRAIN_RESULT, train_cell, weights_digest

from cli_harness import TINY_MODEL_OPTS, logger_state_restored, tiny_dataset_opts
from helpers import REPO

STUDY_CONFIG = str(REPO / "configs/toy/compare_norms_shapes.yaml")


@pytest.fixture(autouse=True)
def one_thread():
    """Multi-threaded torch crawls on a shared CPU; these runs are tiny anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def gn_det_logger_restored():
    """train_cell sets up the `gn_det` logger as a CLI run does; later tests in this process
    read its records through pytest's root handler."""
    with logger_state_restored("gn_det"):
        yield


def tiny_opts(ds):
    return tiny_dataset_opts(ds, "cell") + TINY_MODEL_OPTS


def make_cell(tmp_path, tiny_shapes, lr_per_image=0.0025, images=4):
    """A prepared 2-iteration cell folder (cell.yaml written, as the runner does); its cfg."""
    schedule = Schedule(images=images, lr_per_image=lr_per_image, warmup_images=0,
                        step_fractions=(), checkpoint_fraction=1.0, seed=5)
    grid = Grid(STUDY_CONFIG, [PRESETS["gn_all"]], [2], schedule, tiny_opts(tiny_shapes))
    cell = grid.cells()[0]
    cfg = grid.cell_cfg(cell, str(tmp_path))
    folder = cell.folder(str(tmp_path))
    os.makedirs(folder)
    with open(os.path.join(folder, CELL_CONFIG), "w") as f:
        f.write(cfg.dump())
    return folder, cfg


def test_cell_trains_evaluates_and_records(tmp_path, tiny_shapes):
    from detectron2.utils.env import seed_all_rng

    from gn_det.engine import Trainer

    folder, cfg = make_cell(tmp_path, tiny_shapes)
    result = train_cell(folder)
    with open(os.path.join(folder, TRAIN_RESULT)) as f:
        assert json.load(f) == result
    assert (result["status"], result["error"], result["start_iter"]) == ("done", "", 0)
    assert result["iterations"] == result["max_iter"] == 2
    assert result["train_s"] > 0 and result["s_per_iter"] > 0 and result["eval_s"] > 0
    with open(result["metrics_file"]) as f:
        metrics = json.load(f)
    assert metrics["settings"]["num_images"] == 4 and "AP" in metrics["coco"]
    assert os.path.isfile(os.path.join(folder, "model_final.pth"))
    # The digest is of the seeded initialization: any cell with this SEED and preset starts here.
    seed_all_rng(cfg.SEED)
    assert weights_digest(Trainer.build_model(cfg)) == result["init_digest"]
    seed_all_rng(cfg.SEED + 1)
    assert weights_digest(Trainer.build_model(cfg)) != result["init_digest"]


def test_non_finite_loss_is_a_diverged_result(tmp_path, tiny_shapes):
    folder, _ = make_cell(tmp_path, tiny_shapes, lr_per_image=1e12, images=16)
    result = train_cell(folder)
    assert result["status"] == "diverged"
    assert "not finite" in result["error"] and "\n" not in result["error"]
    assert result["iterations"] < result["max_iter"]
    assert result["metrics_file"] == "" and result["eval_s"] is None
    assert not os.path.exists(os.path.join(folder, "inference"))


def test_weights_digest_covers_parameters_and_buffers():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    digest = weights_digest(model)
    assert len(digest) == 16 and weights_digest(model) == digest
    model[1].running_mean += 1  # a buffer, not a parameter
    assert weights_digest(model) != digest
