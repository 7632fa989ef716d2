"""gn_det.engine.checkpoint: saves are atomic; a SIGKILL inside a save loses nothing."""
import os
import signal
import subprocess
import sys
import textwrap

import torch
from torch import nn

from gn_det.engine.checkpoint import AtomicCheckpointer

KILL_INSIDE_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    import gn_det
    from torch import nn
    from detectron2.checkpoint import DetectionCheckpointer
    from gn_det.engine.checkpoint import AtomicCheckpointer

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


def test_sigkill_inside_save_keeps_previous_checkpoint(tmp_path):
    run_killed("atomic", tmp_path)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    data = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert data["iteration"] == 1 and data["model"]["weight"].abs().sum() > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the killed write
    AtomicCheckpointer(nn.Linear(64, 64), str(tmp_path))  # a new run clears it
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


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
