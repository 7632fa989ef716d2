"""tools/train_net.py end to end: train + evaluate + metrics_final.json, --eval-only, a SIGKILL
after the first checkpoint then --resume, and one-line errors for bad input."""
import pytest
import json
import os
import signal
import subprocess
import sys
import time

from helpers import REPO, TOY_CONFIG

pytestmark = pytest.mark.slow  # trains through the command in subprocesses

TRAIN_NET = str(REPO / "tools/train_net.py")


def train_net(*args, **kw):
    return subprocess.run([sys.executable, TRAIN_NET, *args], capture_output=True, text=True,
                          cwd=REPO, **kw)


def test_train_then_eval_only(tiny_train_opts):
    out = tiny_train_opts[-1]
    r = train_net("--config-file", TOY_CONFIG, *tiny_train_opts)
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads(open(f"{out}/metrics_final.json").read())
    assert final["iteration"] == 6
    assert set(final["results"]) >= {"bbox", "pr"} and "AP50" in final["results"]["bbox"]
    assert os.path.exists(f"{out}/model_final.pth")
    assert os.path.exists(f"{out}/inference/tiny_val/metrics.json")
    assert os.path.exists(f"{out}/inference/tiny_val/pr_curves.png")
    for text in (r.stdout, open(f"{out}/log.txt").read()):  # the evaluator's tables are shown
        assert "Evaluation results for bbox:" in text and "| AR100 " in text
        assert "P/R/F1 at IoU 0.5, score >= 0.5" in text and "| overall " in text
    r = train_net("--config-file", TOY_CONFIG, "--eval-only", *tiny_train_opts,
                  "MODEL.WEIGHTS", f"{out}/model_final.pth")
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads(open(f"{out}/metrics_final.json").read())
    assert again["iteration"] is None
    assert again["results"]["bbox"] == final["results"]["bbox"]  # same weights, same numbers


def test_sigkill_after_first_checkpoint_then_resume(tiny_train_opts):
    out = tiny_train_opts[-1]
    opts = tiny_train_opts + ["SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "2"]
    proc = subprocess.Popen([sys.executable, TRAIN_NET, "--config-file", TOY_CONFIG, *opts],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not os.path.exists(f"{out}/last_checkpoint") and time.time() < deadline:
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not os.path.exists(f"{out}/model_final.pth")
    r = train_net("--config-file", TOY_CONFIG, "--resume", *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    started = [line for line in r.stderr.splitlines() + r.stdout.splitlines()
               if "Starting training from iteration" in line]
    assert started and int(started[-1].split()[-1]) >= 2, started
    assert json.loads(open(f"{out}/metrics_final.json").read())["iteration"] == 8


def test_bad_input_is_one_line(tmp_path):
    r = train_net("--config-file", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("train_net: error: config file")
    assert "Traceback" not in r.stderr
    r = train_net("--config-file", TOY_CONFIG, "MODEL.NORMS.FPN.TYPE", "GroupNorm",
                  "DATASETS.COCO_FORMAT", "[]", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "MODEL.NORMS.FPN.TYPE: unknown norm type 'GroupNorm'" in r.stderr
    r = train_net("--debug", "--config-file", str(tmp_path / "nope.yaml"))  # the traceback
    assert r.returncode == 1 and "Traceback" in r.stderr and "FileNotFoundError" in r.stderr
