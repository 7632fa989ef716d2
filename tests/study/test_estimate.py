"""gn_det.study.estimate: a grid's time from step costs (steps per cell, seeds, jobs, overhead),
and the step costs themselves timed on the grid's own cells."""
import pytest
import torch

from gn_det.study.estimate import estimate_grid, format_estimate, time_steps
from gn_det.study.grid import PRESETS, Grid, Schedule

from cli_harness import TINY_MODEL_OPTS, tiny_dataset_opts
from helpers import REPO

STUDY_CONFIG = str(REPO / "configs/toy/compare_norms_shapes.yaml")


def grid_of(opts, **kwargs):
    schedule = Schedule(images=16, lr_per_image=0.0025, warmup_images=0, step_fractions=(),
                        checkpoint_fraction=1.0, seed=0)
    return Grid(STUDY_CONFIG, [PRESETS["bn_all"], PRESETS["gn_all"]], [2, 4], schedule, opts,
                **kwargs)


def test_grid_time_is_steps_times_step_cost_plus_overhead_per_seed_over_jobs(tiny_shapes):
    grid = grid_of(tiny_dataset_opts(tiny_shapes), design="controlled", num_seeds=3,
                   preset_batches={"gn_all": [4]})
    step_s = {("bn_all", 2): 2.0, ("bn_all", 4): 1.0, ("gn_all", 4): 1.5}
    est = estimate_grid(grid, step_s, jobs=2, overhead_s=10.0, contention=1.2)
    cells = {(r["preset"], r["batch"]): r for r in est["cells"]}
    assert cells["bn_all", 2]["steps"] == 4 and cells["bn_all", 2]["images"] == 16
    assert cells["bn_all", 2]["s_per_image"] == 0.5  # 2 s per step of 4 images (2 x 2)
    assert cells["bn_all", 2]["cell_s"] == round(4 * 2.0 * 1.2 + 10)
    assert est["grid_s"] == round(3 * sum(4 * s * 1.2 + 10 for s in step_s.values()) / 2)
    text = format_estimate(est, "fp32", 1)
    assert "bn_all/bs2" in text and "for 3 seed(s), 2 cell(s) at a time" in text


def test_step_costs_are_timed_on_each_distinct_cell(tiny_shapes, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        grid = grid_of(tiny_dataset_opts(tiny_shapes) + TINY_MODEL_OPTS, num_seeds=2,
                       preset_batches={"bn_all": [4]})
        lines = []
        step_s = time_steps(grid, str(tmp_path), rounds=1, log=lines.append)
    finally:
        torch.set_num_threads(threads)
    assert sorted(step_s) == [("bn_all", 4), ("gn_all", 2), ("gn_all", 4)]
    assert all(s > 0 for s in step_s.values()) and len(lines) == 2
    assert not (tmp_path / "budget").exists()  # nothing trained into the grid's cell folders
    with pytest.raises(KeyError):
        step_s["bn_all", 2]
