"""gn_det.checkpoint: saves are atomic and never hold NaN weights (a SIGKILL inside a save
loses nothing, also in a real train_net run, which --resume continues); loads read files without
running code and refuse, in one line, missing / corrupt files, other architectures, mismatched
shapes (named) and a resume into a model of another shape."""
import argparse
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from cli_harness import KILLING_WRAPPER
from helpers import REPO, TOY_CONFIG
from gn_det.checkpoint import AtomicCheckpointer, CheckpointError, summarize_keys
from gn_det.checkpoint.safe_load import pickle_source_allowed

KILL_INSIDE_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    import gn_det
    from torch import nn
    from detectron2.checkpoint import DetectionCheckpointer
    from gn_det.checkpoint import AtomicCheckpointer

    kind, out = sys.argv[1], sys.argv[2]
    model = nn.Linear(64, 64)
    cls = AtomicCheckpointer if kind == "atomic" else DetectionCheckpointer
    ckpt = cls(model, out)
    ckpt.save("model_final", iteration=1)
    real_save = torch.save

    def save_then_die(obj, f, *a, **k):
        f.write(b"PK partial bytes of a new checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_then_die
    with torch.no_grad():
        model.weight.zero_()
    ckpt.save("model_final", iteration=2)
""")


def run_killed(kind, out):
    r = subprocess.run([sys.executable, "-c", KILL_INSIDE_SAVE, kind, str(out)],
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr


@pytest.mark.slow
def test_sigkill_inside_save_keeps_previous_checkpoint(tmp_path):
    run_killed("atomic", tmp_path)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    data = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert data["iteration"] == 1 and data["model"]["weight"].abs().sum() > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the killed write
    AtomicCheckpointer(nn.Linear(64, 64), str(tmp_path))  # a new run clears it
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_detectron2_checkpointer_loses_it(tmp_path):
    """The failure the atomic save prevents: detectron2's own save truncates the file in place."""
    run_killed("detectron2", tmp_path)
    assert (tmp_path / "model_final.pth").read_bytes().startswith(b"PK partial")


def test_roundtrip_and_pointer(tmp_path):
    model = nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    assert ckpt.get_checkpoint_file() == os.path.join(str(tmp_path), "model_0000009.pth")
    other = nn.Linear(3, 2)
    extra = AtomicCheckpointer(other, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    torch.testing.assert_close(other.weight, model.weight)


def test_never_saves_nan_weights(tmp_path):
    model = nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001", iteration=1)
    with torch.no_grad():
        model.bias[1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"^not saving model_0000003.pth: model weight "
                                                 r"bias is NaN/inf \(iteration 3\); the last good "
                                                 r"checkpoint is .*model_0000001.pth"):
        ckpt.save("model_0000003", iteration=3)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000003.pth").exists()


# ------------------------------------------------------------------------------ loading

class Net(nn.Module):
    """A detector-shaped toy: backbone + head, widths and extras configurable."""

    def __init__(self, width=8, classes=4, extra=False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3), nn.GroupNorm(2, width))
        self.head = nn.Conv2d(width, classes, 1)
        if extra:
            self.extra = nn.Linear(3, 3)


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of Net() in tmp_path, as training writes it."""
    AtomicCheckpointer(Net(), str(tmp_path)).save("model_0000001", iteration=1)
    return tmp_path / "model_0000001.pth"


def load_error(model, path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        AtomicCheckpointer(model, **kwargs).load(str(path))
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    return message


def test_bad_files_are_one_line_errors_naming_them(tmp_path, saved):
    assert load_error(Net(), tmp_path / "nope.pth") == (
        f"MODEL.WEIGHTS {tmp_path / 'nope.pth'}: no such file; expected a checkpoint file "
        "(.pth, .pkl) or a model-zoo name (detectron2://...)")
    cases = {
        "truncated.pth": saved.read_bytes()[:200],
        "garbage.pth": b"hello, not a checkpoint",
        "empty.pth": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        message = load_error(Net(), tmp_path / name)
        assert message.startswith(f"MODEL.WEIGHTS {tmp_path / name}: not a readable torch "
                                  "checkpoint ("), message
    torch.save([1, 2], tmp_path / "list.pth")
    assert "list.pth: holds a list; expected a state dict" in load_error(Net(),
                                                                         tmp_path / "list.pth")
    torch.save({"model": {"w": 1}}, tmp_path / "int.pth")
    assert "int.pth: state dict entry 'w' is a int; expected tensors" in load_error(
        Net(), tmp_path / "int.pth")
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04not a pickle")
    assert "bad.pkl: not a readable Detectron / Caffe2 pickle (" in load_error(
        Net(), tmp_path / "bad.pkl")


def test_safetensors_files_load_and_bad_ones_are_one_line(tmp_path):
    from safetensors.torch import save_file

    source = Net()
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    target = Net()
    AtomicCheckpointer(target).load(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(),
                                                 target.state_dict().values()))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x00")
    assert load_error(Net(), tmp_path / "bad.safetensors").startswith(
        f"MODEL.WEIGHTS {tmp_path / 'bad.safetensors'}: not a readable safetensors file (")


class RunsCode:
    """Unpickling this creates `path`: what a malicious checkpoint does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_torch_files_load_weights_only(tmp_path, saved, monkeypatch, caplog):
    marker = tmp_path / "pwned"
    torch.save({"model": Net().state_dict(), "x": RunsCode(str(marker))}, tmp_path / "evil.pth")
    message = load_error(Net(), tmp_path / "evil.pth")
    assert "evil.pth: holds Python objects of type io.open besides tensors, which " \
           "torch.load(weights_only=True) refuses" in message and "GN_DET_ALLOW_PICKLE=1" in message
    assert not marker.exists()
    torch.save({"model": Net().state_dict(), "args": argparse.Namespace(lr=0.1)},
               tmp_path / "ns.pth")
    assert "of type argparse.Namespace" in load_error(Net(), tmp_path / "ns.pth")
    monkeypatch.setenv("GN_DET_ALLOW_PICKLE", "1")
    with caplog.at_level(logging.WARNING):
        extra = AtomicCheckpointer(Net()).load(str(tmp_path / "ns.pth"))
    assert extra["args"].lr == 0.1
    assert "ns.pth: unpickling Python objects of type argparse.Namespace, which can run code" \
        in caplog.text


def test_pickles_only_from_local_paths_or_the_catalog(tmp_path, caplog):
    net = Net()
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "someone"}, f)
    other = Net()
    with caplog.at_level(logging.WARNING):
        AtomicCheckpointer(other).load(str(tmp_path / "w.pkl"))
    assert torch.equal(other.head.weight, net.head.weight)
    lines = [r.getMessage() for r in caplog.records if "unpickling" in r.getMessage()]
    assert len(lines) == 1 and "w.pkl: unpickling a .pkl file, which can run code" in lines[0]
    message = load_error(Net(), "https://example.com/R-50.pkl")
    assert message.startswith("MODEL.WEIGHTS https://example.com/R-50.pkl: a pickle (.pkl) is "
                              "loaded only from a local path or detectron2's model zoo")
    assert pickle_source_allowed("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    assert pickle_source_allowed("catalog://ImageNetPretrained/FAIR/R-50-GN")
    assert pickle_source_allowed("/data/R-50.pkl") and not pickle_source_allowed("s3://b/x.pkl")


def test_strict_load_refuses_missing_and_unexpected_tensors(saved):
    """strict (export): the file must hold exactly the model; without it, extra and missing
    tensors are only logged."""
    message = load_error(Net(extra=True), saved, strict=True)
    assert message.startswith(f"MODEL.WEIGHTS {saved}: was saved from a model of another shape "
                              "than this config builds (missing 2 keys: extra.* (2)")
    assert message.endswith("; pass the config it was trained with")
    AtomicCheckpointer(Net(extra=True)).load(str(saved))  # not strict: loads, logs the keys
    AtomicCheckpointer(Net(), strict=True).load(str(saved))  # the same model: loads


def test_shape_mismatch_names_the_key_or_is_skipped_on_request(saved, caplog):
    message = load_error(Net(classes=7), saved)
    assert message == (
        f"MODEL.WEIGHTS {saved}: 2 tensors have another shape: head.weight is (4, 8, 1, 1) in the "
        "file but (7, 8, 1, 1) in the model, head.bias is (4,) in the file but (7,) in the "
        "model; if those layers should start from their initialization instead (e.g. another "
        "NUM_CLASSES), set MODEL.SKIP_MISMATCHED_WEIGHTS True")
    net = Net(classes=7)
    with caplog.at_level(logging.WARNING):
        AtomicCheckpointer(net, skip_mismatched=True).load(str(saved))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "skipped (MODEL.SKIP_MISMATCHED_WEIGHTS) 2 tensors" in warnings[0]
    saved_weight = torch.load(saved, weights_only=True)["model"]["backbone.0.weight"]
    torch.testing.assert_close(net.backbone[0].weight, saved_weight)  # the rest did load


def test_mismatch_through_name_matching_is_named_too(tmp_path):
    """Converted / Caffe2 weights are matched by name suffix (detectron2's heuristics)."""
    weights = {k: v for k, v in Net(width=4).state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": weights, "matching_heuristics": True, "__author__": "converter"},
               tmp_path / "converted.pth")

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Net(width=8)

    message = load_error(Detector(), tmp_path / "converted.pth")
    assert "4 tensors have another shape: model.backbone.0.weight is (4, 3, 3, 3) in the file " \
           "but (8, 3, 3, 3) in the model" in message


def test_other_architecture_is_summarized_not_listed(saved, caplog):
    big = nn.Sequential(*[nn.Linear(4, 4) for _ in range(500)])
    message = load_error(big, saved)
    assert message.startswith(f"MODEL.WEIGHTS {saved}: none of its 6 tensors fits the model "
                              "(another architecture?): missing 1000 keys: ")
    assert "unexpected 6 keys: backbone.0.* (2), backbone.1.* (2), head.* (2)" in message
    assert len(message) < 800
    with caplog.at_level(logging.WARNING):  # partly fits: a summary warning per kind
        AtomicCheckpointer(Net(extra=True)).load(str(saved))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"MODEL.WEIGHTS {saved}: model tensors not in the file, left at their "
                        "initialization: 2 keys: extra.* (2) (e.g. extra.bias)"]


def test_summarize_keys_groups_by_prefix():
    keys = [f"backbone.bottom_up.res{s}.{b}.conv{c}.weight"
            for s in range(2, 6) for b in range(3) for c in range(1, 4)]
    keys += [f"backbone.fpn_lateral{i}.weight" for i in range(3, 6)]
    keys += ["head.cls_score.weight", "head.cls_score.bias", "pixel_mean"]
    assert summarize_keys(keys) == (
        "42 keys: backbone.* (39), head.* (2), pixel_mean "
        "(e.g. backbone.bottom_up.res2.0.conv1.weight)")
    assert summarize_keys(keys[:36]).startswith("36 keys: backbone.bottom_up.res2.* (9), ")
    assert summarize_keys([]) == "0 keys"


def test_resume_into_a_model_of_another_shape_is_refused(saved):
    with pytest.raises(CheckpointError, match=r"^resume checkpoint .*model_0000001.pth: was "
                                              r"saved from a model of another shape than this "
                                              r"config builds \(2 tensors have another shape: "
                                              r"head.weight"):
        AtomicCheckpointer(Net(classes=7), str(saved.parent),
                           skip_mismatched=True).resume_or_load("", resume=True)
    with pytest.raises(CheckpointError, match=r"another shape than this config builds \(missing "
                                              r"2 keys: extra.\* \(2\)"):
        AtomicCheckpointer(Net(extra=True), str(saved.parent)).resume_or_load("", resume=True)
    os.unlink(saved)
    with pytest.raises(CheckpointError, match=r"model_0000001.pth: no such file, but "
                                              r".*last_checkpoint names it"):
        AtomicCheckpointer(Net(), str(saved.parent)).resume_or_load("", resume=True)


# -------------------------------------------------- faults in a real train_net run (tiny data)

TRAIN_NET = str(REPO / "tools/train_net.py")
# Runs train_net in-process, SIGKILLing it in the middle of writing its KILL_AT_SAVE-th checkpoint.


def train_net(*args, env=None):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, **(env or {})))
    return r, r.stdout + r.stderr


@pytest.mark.slow
def test_train_net_faults_keep_the_last_good_checkpoint(tiny_train_opts):
    out = tiny_train_opts[-1]
    cmd = [TRAIN_NET, "--config-file", TOY_CONFIG]
    # 1. SIGKILL inside the 2nd checkpoint save (after iteration 3): the 1st stays usable.
    r, log = train_net("-c", KILLING_WRAPPER, *cmd, *tiny_train_opts, env={"KILL_AT_SAVE": "2"})
    assert r.returncode == -signal.SIGKILL, log[-3000:]
    assert open(f"{out}/last_checkpoint").read() == "model_0000001.pth"
    state = torch.load(f"{out}/model_0000001.pth", weights_only=True)  # optimizer, scheduler too
    assert state["iteration"] == 1 and "LRScheduler" in state["trainer"]["hooks"]
    assert state["trainer"]["_trainer"]["optimizer"]["state"]  # SGD momentum, for --resume

    # 2. Resuming with a config that changes the model's shape is refused, naming a key.
    r, log = train_net(*cmd, "--resume", *tiny_train_opts, "MODEL.FPN.OUT_CHANNELS", "16")
    assert r.returncode == 2 and "Traceback" not in log, log[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train_net: error: resume checkpoint {out}/model_0000001.pth: was "
                           "saved from a model of another shape than this config builds ("), last
    assert "backbone.fpn_lateral" in last and "resume with the config it was trained with" in last

    # 3. --resume continues from it; an inf LR from iteration 4 makes the loss NaN at iteration 5:
    #    one line naming the iteration and loss terms, no traceback, no evaluation, and the last
    #    checkpoint written (after iteration 3) is a good one.
    r, log = train_net(*cmd, "--resume", *tiny_train_opts, "SOLVER.STEPS", "(4,)",
                       "SOLVER.GAMMA", "1e999")
    assert r.returncode == 2 and "Traceback" not in log, log[-3000:]
    assert "Starting training from iteration 2" in log
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("train_net: error: loss is not finite at iteration 5 (micro-step 0): "
                           "loss_cls=nan"), last
    assert open(f"{out}/last_checkpoint").read() == "model_0000003.pth"
    state = torch.load(f"{out}/model_0000003.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not os.path.exists(f"{out}/model_final.pth")
    assert not os.path.exists(f"{out}/inference")  # a failed run is not evaluated

    # 4. ... and resuming from that good checkpoint with the original config finishes the run.
    r, log = train_net(*cmd, "--resume", *tiny_train_opts)
    assert r.returncode == 0, log[-3000:]
    assert "Starting training from iteration 4" in log
    assert json.loads(open(f"{out}/metrics_final.json").read())["iteration"] == 6
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
