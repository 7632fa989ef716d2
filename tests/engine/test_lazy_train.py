"""gn_det.engine.lazy_train through tools/lazy_train_net.py (detectron2's lazyconfig_train_net
CLI): a tiny run of the toy LazyConfig preset on CPU with accumulation, atomic checkpoints and
the precision/recall evaluator; --resume continues it, --eval-only evaluates a checkpoint; a
user error is one line."""
import json
import subprocess
import sys

import pytest

from cli_harness import tiny_dataset_opts
from helpers import REPO

pytestmark = pytest.mark.slow  # trains through the command in subprocesses

TOOL = str(REPO / "tools" / "lazy_train_net.py")
TOY = str(REPO / "configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py")


def tiny_overrides(shapes, out, max_iter=4):
    """The toy preset shrunk to seconds: 64 px, 32-channel FPN, one head conv, GN+WS with 8
    groups (P7 is 1x1 there), 2 images x 2 micro-steps, a checkpoint every 2 iterations."""
    entries = tiny_dataset_opts(shapes, "lt")[1]
    return [f"datasets.coco_format={entries}", "dataloader.train.dataset.names=[lt_train]",
            "dataloader.test.dataset.names=lt_val",
            "dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
            "dataloader.train.mapper.augmentations.0.max_size=64",
            "dataloader.test.mapper.augmentations.0.short_edge_length=64",
            "dataloader.test.mapper.augmentations.0.max_size=64",
            "model.backbone.out_channels=32",
            "model.head.input_shape=[" + ", ".join(["{channels: 32}"] * 5) + "]",
            "model.head.conv_dims=[32]", "dataloader.train.total_batch_size=2",
            *(f"{c}.norm={{type: GN, num_groups: 8}}" for c in
              ("model.backbone.bottom_up", "model.backbone", "model.head")),
            "train.accumulate_steps=2", f"train.max_iter={max_iter}", "train.checkpointer.period=2",
            "lr_multiplier.scheduler.milestones=[2, 3]",
            f"lr_multiplier.scheduler.num_updates={max_iter}",
            f"train.output_dir={out}"]


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def trained(tiny_shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("lazy") / "out"
    r = run("--config-file", TOY, *tiny_overrides(tiny_shapes, out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out, r


def test_trains_evaluates_and_writes(trained):
    out, r = trained
    final = json.loads((out / "metrics_final.json").read_text())
    assert final["iteration"] == 4 and set(final["results"]) >= {"bbox", "pr"}
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert (out / "model_0000001.pth").is_file() and (out / "model_final.pth").is_file()
    metrics = json.loads((out / "inference/lt_val/metrics.json").read_text())
    assert set(metrics["pr"]) == {"0.5", "0.75"}
    log = r.stdout + r.stderr
    assert "per-GPU batch: 2 images" in log and "effective batch 4" in log
    assert "P/R/F1 at IoU 0.5, score >= 0.5" in log  # the gn_det logger reaches the console
    assert not list(out.glob(".*.tmp"))  # atomic saves leave no temp files


def test_resume_continues_and_eval_only_evaluates(trained, tiny_shapes):
    out, _ = trained
    r = run("--config-file", TOY, "--resume", *tiny_overrides(tiny_shapes, out, max_iter=6))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting training from iteration 4" in r.stdout + r.stderr
    assert json.loads((out / "metrics_final.json").read_text())["iteration"] == 6
    r = run("--config-file", TOY, "--eval-only", *tiny_overrides(tiny_shapes, out),
            f"train.init_checkpoint={out / 'model_final.pth'}")
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((out / "metrics_final.json").read_text())
    assert final["iteration"] is None and "bbox" in final["results"]


def test_user_error_is_one_line(tiny_shapes, tmp_path):
    r = run("--config-file", TOY, *tiny_overrides(tiny_shapes, tmp_path / "o"),
            "train.init_checkpoint=/nonexistent/w.pth")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("lazy_train_net: error:")]
    assert len(lines) == 1 and "/nonexistent/w.pth: no such file" in lines[0]
    assert "Traceback" not in r.stderr
