"""gn_det.study.grid: presets, the per-image schedule and each cell's config (no training)."""
import dataclasses

import pytest
import yaml

from gn_det.config import all_component_specs
from gn_det.study.grid import (PRESETS, SCHEDULE_KEYS, Cell, Grid, Preset, Schedule,
                               extra_preset)
from gn_det.study.runner import config_differences

from helpers import REPO

STUDY_CONFIG = str(REPO / "configs/toy/compare_norms_shapes.yaml")
GNWS_CONFIG = str(REPO / "configs/toy/retinanet_R_18_FPN_gnws_shapes.yaml")


@pytest.fixture
def data_opts(tiny_shapes):
    ds = tiny_shapes
    return ["DATASETS.COCO_FORMAT",
            [["grid_train", f"{ds}/annotations/train.json", f"{ds}/train"],
             ["grid_val", f"{ds}/annotations/val.json", f"{ds}/val"]],
            "DATASETS.TRAIN", ("grid_train",), "DATASETS.TEST", ("grid_val",)]


def schedule(**kw):
    base = dict(images=16, lr_per_image=0.0025, warmup_images=8, step_fractions=(0.5, 0.75),
                checkpoint_fraction=0.5, seed=3)
    return Schedule(**dict(base, **kw))


def test_schedule_from_the_study_config(data_opts):
    from gn_det.config import load_cfg

    s = Schedule.from_cfg(load_cfg(STUDY_CONFIG, data_opts))
    assert s == Schedule(images=2000, lr_per_image=0.0025, warmup_images=200,
                         step_fractions=(0.8, 0.9), checkpoint_fraction=0.5, seed=0)


def test_schedule_counts_accumulation_in_the_batch(data_opts):
    from gn_det.config import load_cfg

    cfg = load_cfg(STUDY_CONFIG, data_opts + ["SOLVER.ACCUMULATE_STEPS", 2, "SEED", -1])
    s = Schedule.from_cfg(cfg)
    assert (s.images, s.lr_per_image, s.warmup_images, s.seed) == (4000, 0.00125, 400, 0)


@pytest.mark.parametrize("batch", [1, 2, 4, 8])
def test_solver_keeps_images_lr_per_image_and_warmup_images(batch):
    s = Schedule(images=2000, lr_per_image=0.0025, warmup_images=200, step_fractions=(0.8, 0.9),
                 checkpoint_fraction=0.5, seed=0)
    v = s.solver(batch)
    assert v["SOLVER.IMS_PER_BATCH"] == batch
    assert v["SOLVER.MAX_ITER"] * batch == 2000
    assert v["SOLVER.BASE_LR"] == pytest.approx(0.0025 * batch)
    assert v["SOLVER.WARMUP_ITERS"] * batch == 200
    assert [x * batch for x in v["SOLVER.STEPS"]] == [1600, 1800]
    assert v["SOLVER.CHECKPOINT_PERIOD"] * batch == 1000
    assert (v["SOLVER.REFERENCE_WORLD_SIZE"], v["SOLVER.ACCUMULATE_STEPS"]) == (0, 1)
    assert (v["SEED"], v["TEST.EVAL_PERIOD"]) == (0, 0)
    assert set(v) | {"OUTPUT_DIR"} == set(SCHEDULE_KEYS)


@pytest.mark.parametrize("change, batches, match", [
    (dict(images=12), [1, 8], r"--max-images 12 is not a multiple of batch 8.*multiple of 8"),
    (dict(images=0), [1], r"--max-images must be positive"),
    (dict(lr_per_image=0.0), [1], r"--lr-per-image must be positive"),
    (dict(warmup_images=16), [1], r"--warmup-images 16 must be in \[0, --max-images 16\)"),
    (dict(step_fractions=(0.75, 0.5)), [1], r"--steps 0.75,0.5: LR steps are increasing"),
    (dict(step_fractions=(1.0,)), [1], r"--steps 1: LR steps are increasing"),
    (dict(images=48, step_fractions=(0.8, 0.9)), [1, 8],
     r"--steps 0.8,0.9: at batch 8 \(6 iterations\) the LR steps round to iterations \[5, 5\]"),
    (dict(step_fractions=(0.01,)), [2], r"at batch 2 \(8 iterations\) .* \[0\]"),
])
def test_schedule_errors_name_the_flag(change, batches, match):
    with pytest.raises(ValueError, match=match):
        schedule(**change).check(batches)


def test_presets_set_every_component(data_opts, tmp_path):
    expected = {"frozenbn": ("FrozenBN", "none", "none", False),
                "bn_all": ("BN", "BN", "BN", False),
                "gn_fpn_head": ("FrozenBN", "GN", "GN", False),
                "gn_all": ("GN", "GN", "GN", False),
                "gnws_all": ("GN", "GN", "GN", True)}
    assert list(PRESETS) == list(expected)
    grid = Grid(GNWS_CONFIG, list(PRESETS.values()), [2], schedule(), data_opts)  # WS base
    for cell in grid.cells():
        specs = all_component_specs(grid.cell_cfg(cell, str(tmp_path)))
        parts = ("BACKBONE", "FPN", "RETINANET_HEAD")
        got = tuple(specs[c].norm.type or "none" for c in parts)  # "" is no norm
        ws = {bool(specs[c].ws) for c in parts}
        assert got == expected[cell.preset.name][:3], cell.key
        assert ws == {expected[cell.preset.name][3]}, cell.key


def test_the_batch_changes_only_the_schedule(data_opts, tmp_path):
    grid = Grid(STUDY_CONFIG, [PRESETS["bn_all"]], [1, 4], schedule(), data_opts)
    one, four = (grid.cell_cfg(c, str(tmp_path)) for c in grid.cells())
    changed = {d.split(":")[0] for d in config_differences(one.dump(), four.dump())}
    assert changed == {"SOLVER.IMS_PER_BATCH", "SOLVER.BASE_LR", "SOLVER.MAX_ITER",
                       "SOLVER.WARMUP_ITERS", "SOLVER.STEPS", "SOLVER.CHECKPOINT_PERIOD"}
    assert (one.SEED, four.SEED) == (3, 3)
    assert one.OUTPUT_DIR.endswith("bn_all/bs1") and four.OUTPUT_DIR.endswith("bn_all/bs4")
    # One dataset cache for the grid, outside the cell folders; a moved cache is no new config.
    assert one.DATASETS.CACHE_DIR == four.DATASETS.CACHE_DIR == str(tmp_path / "dataset_cache")
    moved = one.clone()
    moved.DATASETS.CACHE_DIR = "/elsewhere"
    assert config_differences(one.dump(), moved.dump()) == []


def test_cell_config_round_trips_through_its_yaml_dump(data_opts, tmp_path):
    from gn_det.config import load_cfg

    grid = Grid(STUDY_CONFIG, [PRESETS["gnws_all"]], [2], schedule(), data_opts)
    cfg = grid.cell_cfg(grid.cells()[0], str(tmp_path))
    path = tmp_path / "cell.yaml"
    path.write_text(cfg.dump())
    assert config_differences(cfg.dump(), load_cfg(str(path)).dump()) == []
    assert yaml.safe_load(path.read_text())["SOLVER"]["BASE_LR"] == pytest.approx(0.005)


def test_extra_config_is_a_preset_with_the_grids_schedule(data_opts, tmp_path):
    extra = tmp_path / "gnws_192.yaml"  # its own input size, unlike the study config's 160 px
    extra.write_text(f'_BASE_: "{GNWS_CONFIG}"\nINPUT:\n  MIN_SIZE_TRAIN: (192,)\n'
                     f'SOLVER:\n  OPTIMIZER: "AdamW"\n  BASE_LR: 0.002\n')
    preset = extra_preset(str(extra))
    assert preset.name == "gnws_192" and preset.config_file == str(extra)
    grid = Grid(STUDY_CONFIG, [PRESETS["gn_all"], preset], [4], schedule(), data_opts)
    cfg = grid.cell_cfg(Cell(preset, 4), str(tmp_path))
    assert all_component_specs(cfg)["BACKBONE"].ws
    assert cfg.INPUT.MIN_SIZE_TRAIN == (192,)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (pytest.approx(0.01), 4)
    assert cfg.SOLVER.OPTIMIZER == "SGD"  # the grid's LR per image is in its optimizer's units


def test_schedule_keeps_the_study_configs_optimizer(data_opts):
    from gn_det.config import load_cfg

    s = Schedule.from_cfg(load_cfg(STUDY_CONFIG, data_opts + ["SOLVER.OPTIMIZER", "AdamW"]))
    assert s.optimizer == "AdamW" and s.solver(2)["SOLVER.OPTIMIZER"] == "AdamW"


def test_grid_refuses_schedule_opts_and_duplicate_names(data_opts):
    with pytest.raises(ValueError, match="SOLVER.BASE_LR is set per cell by the grid; use "
                                         "--max-images, --lr-per-image"):
        Grid(STUDY_CONFIG, [PRESETS["gn_all"]], [1], schedule(),
             data_opts + ["SOLVER.BASE_LR", "0.1"])
    twin = dataclasses.replace(PRESETS["bn_all"], description="other")
    with pytest.raises(ValueError, match="preset name 'bn_all' is used twice"):
        Grid(STUDY_CONFIG, [PRESETS["bn_all"], twin], [1], schedule(), data_opts)


def test_num_classes_mismatch_is_one_line(data_opts, tmp_path):
    grid = Grid(STUDY_CONFIG, [Preset("p", "d")], [1], schedule(),
                data_opts + ["MODEL.RETINANET.NUM_CLASSES", 7])
    with pytest.raises(ValueError, match=r"dataset 'grid_train' has 4 classes but "
                                         r"MODEL.RETINANET.NUM_CLASSES is 7; add "
                                         r"`MODEL.RETINANET.NUM_CLASSES 4`"):
        grid.cell_cfg(grid.cells()[0], str(tmp_path))  # registration checks the class count


def test_cells_see_the_same_images_in_the_same_order(data_opts, tmp_path):
    """Same SEED: the same initial weights per preset, and for every cell the same sampler order
    and flips, whatever the batch."""
    import itertools

    import torch
    from detectron2.utils.env import seed_all_rng

    from gn_det.engine import Trainer
    from gn_det.study.train_cell import weights_digest

    opts = data_opts + ["DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TRAIN", (64,),
                        "INPUT.MAX_SIZE_TRAIN", 64, "MODEL.NORMS.GN.NUM_GROUPS", 8]
    grid = Grid(STUDY_CONFIG, [PRESETS["gn_all"], PRESETS["bn_all"]], [1, 2], schedule(), opts)
    streams, digests = [], {}
    for cell in grid.cells():
        cfg = grid.cell_cfg(cell, str(tmp_path))
        seed_all_rng(cfg.SEED)  # as default_setup does in train_cell
        digests.setdefault(cell.preset.name, set()).add(weights_digest(Trainer.build_model(cfg)))
        batches = itertools.islice(Trainer.build_train_loader(cfg), 12 // cell.batch)
        streams.append([d for batch in batches for d in batch])
    assert [len(d) for d in digests.values()] == [1, 1]
    for other in streams[1:]:
        assert [d["image_id"] for d in other] == [d["image_id"] for d in streams[0]]
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(streams[0], other))
