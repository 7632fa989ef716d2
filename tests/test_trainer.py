"""gn_det.engine.trainer: Trainer on real (tiny) detectron2 training runs."""
import pytest
import torch

from gn_det.config import load_cfg
from gn_det.data import register_datasets_from_cfg
from gn_det.engine import Trainer, launch

from _train_worker import train_worker
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
