"""gn_det.engine.trainer: Trainer on real (tiny) detectron2 training runs."""
import json
import shutil

import pytest
import torch

from gn_det.config import load_cfg
from gn_det.data import ImageReadError, register_datasets_from_cfg
from gn_det.engine import Trainer, launch

from _train_worker import train_worker
from cli_harness import cut_jpeg, tiny_train_opts
from conftest import TOY_CONFIG


def test_trainer_runs_and_states_per_gpu_batch(tiny_train_opts, caplog):
    cfg = load_cfg(TOY_CONFIG, tiny_train_opts + ["SOLVER.ACCUMULATE_STEPS", "2"])
    register_datasets_from_cfg(cfg)
    with caplog.at_level("INFO", logger="detectron2"):
        trainer = Trainer(cfg)
    assert any("per-GPU batch: 2 images" in r.getMessage() and "effective batch 4" in r.getMessage()
               for r in caplog.records)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER  # detectron2 leaves iter at max_iter when done
    assert "bbox" in trainer._last_eval_results and "pr" in trainer._last_eval_results


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU gloo path")
def test_two_cpu_processes_train_identically(tiny_train_opts, tmp_path):
    opts = tiny_train_opts + ["SOLVER.MAX_ITER", "8", "SOLVER.BASE_LR", "0.01",
                              "SOLVER.WARMUP_ITERS", "4",
                              "SOLVER.CHECKPOINT_PERIOD", "4"]
    launch(train_worker, 2, dist_url="auto", args=(TOY_CONFIG, opts, str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["model"].keys() == r1["model"].keys()
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    assert sorted(p.name for p in (tmp_path / "rank0").glob("*.pth")) == [
        "model_0000003.pth", "model_0000007.pth", "model_final.pth"]
    assert not list((tmp_path / "rank1").glob("*.pth"))  # only rank 0 writes checkpoints
    assert r0["loss_after"] < r0["loss_before"], (r0["loss_before"], r0["loss_after"])


def test_loaders_name_the_file_and_dataset_of_an_image_that_fails(tiny_shapes, tmp_path):
    """Trainer's train and test loaders (2 worker processes) raise one line naming the cut photo
    and its dataset, as train_net shows it (tests/test_bad_inputs.py runs the CLI)."""
    shapes = tmp_path / "shapes"
    shutil.copytree(tiny_shapes, shapes)
    for split in ("train", "val"):
        cut_jpeg(shapes / split / json.loads(
            (shapes / "annotations" / f"{split}.json").read_text())["images"][0]["file_name"])
    cfg = load_cfg(TOY_CONFIG, tiny_train_opts(shapes, tmp_path / "out", "cutloader") + [
        "DATASETS.CHECK_IMAGES", "False", "DATALOADER.NUM_WORKERS", "2"])
    register_datasets_from_cfg(cfg)
    for name, loader in (("cutloader_train", Trainer.build_train_loader(cfg)),
                         ("cutloader_val", Trainer.build_test_loader(cfg, "cutloader_val"))):
        with pytest.raises(ImageReadError) as info:
            for _ in zip(range(8), loader):
                pass
        assert str(info.value).startswith(f"image file {shapes / name.split('_')[1]}/")
        assert f" of dataset {name!r} cannot be read (OSError: image file is truncated (" \
            in str(info.value)
