"""gn_det.study.grid: presets, the two designs' per-image schedules, seeds and each cell's config;
and the controlled design's defining property: its cells of a batch-independent norm are the same
training up to numerics (a few iterations of each split), BN's are not."""
import dataclasses

import pytest
import yaml

from gn_det.config import all_component_specs
from gn_det.study.grid import (CONTROLLED_KEYS, DEFAULT_PRESETS, PRESETS, SCHEDULE_KEYS, Cell,
                               Grid, Preset, Schedule, extra_preset)
from gn_det.study.step_normalizer import STEP_NORMALIZED_ARCH
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


@pytest.mark.parametrize("batch", [1, 2, 4, 8])
def test_controlled_solver_fixes_the_optimizer_and_accumulates(batch):
    """Only the forward's batch varies: every cell steps on 8 images, with one LR and schedule."""
    s = Schedule(images=2000, lr_per_image=0.0025, warmup_images=200, step_fractions=(0.8, 0.9),
                 checkpoint_fraction=0.5, seed=0)
    v = s.solver(batch, effective_batch=8)
    assert (v["SOLVER.IMS_PER_BATCH"], v["SOLVER.ACCUMULATE_STEPS"]) == (batch, 8 // batch)
    assert (v["SOLVER.MAX_ITER"], v["SOLVER.WARMUP_ITERS"], v["SOLVER.STEPS"]) == \
        (250, 25, (200, 225))
    assert v["SOLVER.BASE_LR"] == pytest.approx(0.02)


def test_budget_floor_gives_a_large_batch_more_images_not_fewer_steps():
    s = schedule(images=64, step_fractions=(0.5,), min_steps=20)
    assert [s.solver(b)["SOLVER.MAX_ITER"] for b in (1, 2, 4, 8)] == [64, 32, 20, 20]
    assert s.solver(8)["SOLVER.STEPS"] == (10,)  # at the same fraction of the longer schedule
    assert s.solver(8)["SOLVER.BASE_LR"] == pytest.approx(0.02)  # still lr_per_image x b

@pytest.mark.parametrize("change, batches, match", [
    (dict(min_steps=-1), [1], r"--min-steps must be >= 0"),
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
                "gnws_all": ("GN", "GN", "GN", True),
                "brn_all": ("BRN", "BRN", "BRN", False),
                "frn_all": ("FRN", "FRN", "FRN", False),
                "evonorm_all": ("EvoNormS0", "EvoNormS0", "EvoNormS0", False)}
    assert list(PRESETS) == list(expected)
    assert DEFAULT_PRESETS == ("frozenbn", "bn_all", "gn_fpn_head", "gn_all", "gnws_all")
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
    assert one.OUTPUT_DIR.endswith("budget/bn_all/bs1/seed3")
    assert four.OUTPUT_DIR.endswith("budget/bn_all/bs4/seed3")
    # One dataset cache for the grid, outside the cell folders; a moved cache is no new config.
    assert one.DATASETS.CACHE_DIR == four.DATASETS.CACHE_DIR == str(tmp_path / "dataset_cache")
    moved = one.clone()
    moved.DATASETS.CACHE_DIR = "/elsewhere"
    assert config_differences(one.dump(), moved.dump()) == []


def test_seeds_are_consecutive_and_change_only_the_seed(data_opts, tmp_path):
    grid = Grid(STUDY_CONFIG, [PRESETS["gn_all"], PRESETS["bn_all"]], [1, 2], schedule(),
                data_opts, num_seeds=3)
    assert grid.seeds == [3, 4, 5]
    cells = grid.cells()  # seed-major: a grid stopped early has whole seeds
    assert [c.key for c in cells[:5]] == ["gn_all/bs1/seed3", "gn_all/bs2/seed3",
                                          "bn_all/bs1/seed3", "bn_all/bs2/seed3",
                                          "gn_all/bs1/seed4"]
    a, b = (grid.cell_cfg(c, str(tmp_path)) for c in (cells[0], cells[4]))
    assert {d.split(":")[0] for d in config_differences(a.dump(), b.dump())} == {"SEED"}
    assert cells[4].folder("out") == "out/budget/gn_all/bs1/seed4"


def test_controlled_cells_differ_only_in_the_forwards_batch(data_opts, tmp_path):
    grid = Grid(STUDY_CONFIG, [PRESETS["bn_all"]], [1, 4], schedule(), data_opts,
                design="controlled")
    assert grid.effective_batch == 4
    one, four = (grid.cell_cfg(c, str(tmp_path)) for c in grid.cells())
    changed = {d.split(":")[0] for d in config_differences(one.dump(), four.dump())}
    assert changed == {"SOLVER.IMS_PER_BATCH", "SOLVER.ACCUMULATE_STEPS"}
    assert (one.SOLVER.IMS_PER_BATCH, one.SOLVER.ACCUMULATE_STEPS) == (1, 4)
    assert one.MODEL.META_ARCHITECTURE == STEP_NORMALIZED_ARCH
    assert one.DATALOADER.ASPECT_RATIO_GROUPING is False
    assert one.OUTPUT_DIR.endswith("controlled/bn_all/bs1/seed3")


@pytest.mark.parametrize("kwargs, opts, match", [
    (dict(design="controlled", effective_batch=6), [], r"--effective-batch 6: .* every batch "
                                                       r"must divide it; 4 does not"),
    (dict(effective_batch=4), [], r"--effective-batch is the controlled design's"),
    (dict(design="bogus"), [], r"--design 'bogus': valid are budget, controlled"),
    (dict(num_seeds=0), [], r"--seeds must be >= 1"),
    (dict(design="controlled"), ["DATALOADER.ASPECT_RATIO_GROUPING", True],
     r"DATALOADER.ASPECT_RATIO_GROUPING is set per cell by the grid \(controlled design\)"),
])
def test_design_errors_are_one_line(data_opts, kwargs, opts, match):
    with pytest.raises(ValueError, match=match):
        Grid(STUDY_CONFIG, [PRESETS["gn_all"]], [1, 4], schedule(), data_opts + opts, **kwargs)
    assert "MODEL.META_ARCHITECTURE" in CONTROLLED_KEYS


def test_preset_batches_run_a_preset_at_some_batches_only(data_opts):
    grid = Grid(STUDY_CONFIG, [PRESETS["bn_all"], PRESETS["gn_all"]], [1, 2, 4], schedule(),
                data_opts, design="controlled", preset_batches={"gn_all": [1, 4]})
    assert [c.key for c in grid.cells()] == ["bn_all/bs1/seed3", "bn_all/bs2/seed3",
                                             "bn_all/bs4/seed3", "gn_all/bs1/seed3",
                                             "gn_all/bs4/seed3"]
    with pytest.raises(ValueError, match=r"--preset-batches gn_all=8: the preset must be one of "
                                         r"the grid's \(bn_all, gn_all\) and its batches some of "
                                         r"--batches \(1,2,4\)"):
        Grid(STUDY_CONFIG, [PRESETS["bn_all"], PRESETS["gn_all"]], [1, 2, 4], schedule(),
             data_opts, preset_batches={"gn_all": [8]})


def test_controlled_design_needs_gnretinanet(data_opts, tmp_path):
    stock = tmp_path / "stock.yaml"
    stock.write_text(f'_BASE_: "{STUDY_CONFIG}"\nMODEL:\n  META_ARCHITECTURE: "RetinaNet"\n')
    grid = Grid(STUDY_CONFIG, [extra_preset(str(stock))], [1, 2], schedule(), data_opts,
                design="controlled")
    with pytest.raises(ValueError, match=r"stock.yaml: the controlled design normalizes "
                                         r"GNRetinaNet's loss per optimizer step, and "
                                         r"MODEL.META_ARCHITECTURE is 'RetinaNet'"):
        grid.cell_cfg(grid.cells()[0], str(tmp_path))


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
    assert cfg.OUTPUT_DIR.endswith("budget/gnws_192/bs4/seed0")


def test_schedule_keeps_the_study_configs_optimizer(data_opts):
    from gn_det.config import load_cfg

    s = Schedule.from_cfg(load_cfg(STUDY_CONFIG, data_opts + ["SOLVER.OPTIMIZER", "AdamW"]))
    assert s.optimizer == "AdamW" and s.solver(2)["SOLVER.OPTIMIZER"] == "AdamW"


def test_grid_refuses_schedule_opts_and_duplicate_names(data_opts):
    with pytest.raises(ValueError, match=r"SOLVER.BASE_LR is set per cell by the grid \(budget "
                                         r"design\); use --max-images, --lr-per-image"):
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


def _losses(grid, cell, out, iterations):
    """total_loss of each of the cell's optimizer steps, trained by the cell's Trainer (its LR
    schedule; no checkpoints, writers or evaluation)."""
    from detectron2.engine import HookBase, hooks
    from detectron2.utils.env import seed_all_rng

    from gn_det.engine import Trainer

    class Record(HookBase):
        def __init__(self):
            self.losses = []

        def after_step(self):
            self.losses.append(self.trainer.storage.history("total_loss").latest())

    cfg = grid.cell_cfg(cell, out)
    seed_all_rng(cfg.SEED)  # as default_setup does in train_cell
    trainer = Trainer(cfg)
    trainer._hooks = [h for h in trainer._hooks if isinstance(h, hooks.LRScheduler)]
    record = Record()
    trainer.register_hooks([record])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert len(record.losses) == iterations
    return record.losses


@pytest.mark.slow
def test_controlled_design_gn_cells_are_one_training_and_bn_cells_are_not(data_opts, tmp_path):
    """The same 4 steps of 4 images as 1 x 4, 2 x 2 and 4 x 1: GN's losses agree to fp32
    numerics (~1e-7 relative; 1e-4 allowed), BN's differ from the first step (BN normalizes over
    the forward's images; 2 x 2 and 4 x 1 only, as BN cannot train on one 1x1 P7 map)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    opts = data_opts + ["INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 64,
                        "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.RETINANET.NUM_CONVS", 1,
                        "MODEL.NORMS.GN.NUM_GROUPS", 8, "MODEL.PRECISION", "fp32",
                        "DATASETS.TEST", ()]
    plain = schedule(images=16, warmup_images=0, step_fractions=())
    try:
        runs = {}
        for preset, batches in (("gn_all", [1, 2, 4]), ("bn_all", [2, 4])):
            grid = Grid(STUDY_CONFIG, [PRESETS[preset]], batches, plain, opts,
                        design="controlled", effective_batch=4)
            for cell in grid.cells():
                runs[preset, cell.batch] = _losses(grid, cell, str(tmp_path), 4)
    finally:
        torch.set_num_threads(threads)
    reference = runs["gn_all", 4]
    for batch in (1, 2):
        torch.testing.assert_close(runs["gn_all", batch], reference, rtol=1e-4, atol=0)
    bn = [abs(a - b) / b for a, b in zip(runs["bn_all", 2], runs["bn_all", 4])]
    assert min(bn) > 1e-3, bn
