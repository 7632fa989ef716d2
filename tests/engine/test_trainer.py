"""gn_det.engine.trainer: Trainer on real (tiny) detectron2 training runs."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from detectron2.evaluation.testing import flatten_results_dict
from gn_det.config import load_cfg
from gn_det.data import ImageReadError, register_datasets_from_cfg
from gn_det.engine import Trainer, launch
from gn_det.engine.defaults import StrictJSONWriter

from _train_worker import train_worker
from cli_harness import cut_jpeg, tiny_train_opts
from helpers import REPO, TOY_CONFIG, free_port, kill_with_children


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises CPU AMP (bf16)")
def test_amp_with_accumulation_trains_on_cpu_in_bf16(tiny_train_opts):
    # PRECISION_FALLBACK none: bf16 even on a CPU without bf16 units (emulated, slower)
    cfg = load_cfg(TOY_CONFIG, tiny_train_opts + [
        "SOLVER.AMP.ENABLED", "True", "SOLVER.ACCUMULATE_STEPS", "2", "SOLVER.MAX_ITER", "2",
        "MODEL.PRECISION_FALLBACK", "none", "DATASETS.TEST", "()"])
    register_datasets_from_cfg(cfg)
    trainer = Trainer(cfg)
    assert (trainer._trainer.precision, trainer._trainer.grad_scaler) == (torch.bfloat16, None)
    seen = []
    trainer.model.backbone.bottom_up.stem.conv1.register_forward_hook(
        lambda module, inputs, output: seen.append(output.dtype))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2 and seen == [torch.bfloat16] * 4  # 2 steps x 2 micro-steps
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(math.isfinite(v) for v, _ in losses)


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU gloo path")
@pytest.mark.slow
@pytest.mark.multiproc
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
    and its dataset, as train_net shows it (tests/tools/test_bad_inputs.py runs the CLI)."""
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU gloo path")
@pytest.mark.slow
@pytest.mark.multiproc
def test_two_machines_over_loopback_train_identically(tiny_train_opts, tmp_path):
    """--num-machines 2 --machine-rank 0|1 --dist-url tcp://127.0.0.1:PORT, as two separate
    commands (train_net's launch call, one process each): they train together, end with the
    same weights, and only rank 0 writes checkpoints."""
    opts = tiny_train_opts + ["SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
                              "DATASETS.TEST", "()"]  # no final evaluation: not what is tested
    url = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the two "machines" share this one's cores
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import gn_det; "
              "from gn_det.engine import launch; from _train_worker import train_worker; "
              "launch(train_worker, 1, num_machines=2, machine_rank=int(sys.argv[2]), "
              "dist_url=sys.argv[3], args=(sys.argv[4], sys.argv[6:], sys.argv[5]))")
    machines = [subprocess.Popen([sys.executable, "-c", script, str(REPO / "tests"), str(rank), url,
                                  TOY_CONFIG, str(tmp_path), *opts], cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for rank in (0, 1)]
    try:
        for m in machines:
            _, err = m.communicate(timeout=600)
            assert m.returncode == 0, err[-3000:]
    finally:
        kill_with_children(machines)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    assert sorted(p.name for p in (tmp_path / "rank0").glob("*.pth")) == [
        "model_0000001.pth", "model_0000003.pth", "model_final.pth"]
    assert not list((tmp_path / "rank1").glob("*.pth"))


@pytest.mark.slow
def test_metrics_json_of_a_training_run_is_strict_json(tiny_train_opts):
    """Trainer writes OUTPUT_DIR/metrics.json with gn_det's default_writers: the evaluator's NaN
    (the AP of an object size with no ground truth) is null there, every line strict JSON."""
    cfg = load_cfg(TOY_CONFIG, tiny_train_opts + ["SOLVER.MAX_ITER", "2"])
    register_datasets_from_cfg(cfg)
    trainer = Trainer(cfg)
    assert any(isinstance(w, StrictJSONWriter) for w in trainer.build_writers())
    trainer.resume_or_load(resume=False)
    trainer.train()
    undefined = [k for k, v in flatten_results_dict(trainer._last_eval_results).items()
                 if isinstance(v, float) and math.isnan(v)]
    assert undefined  # e.g. bbox/APl: the toy shapes have no large object
    text = open(os.path.join(cfg.OUTPUT_DIR, "metrics.json")).read()
    lines = [json.loads(line, parse_constant=lambda t: pytest.fail(f"{t} in metrics.json"))
             for line in text.splitlines()]
    last = [line for line in lines if undefined[0] in line][-1]
    assert all(last[k] is None for k in undefined)
