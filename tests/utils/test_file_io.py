"""gn_det.utils.file_io: atomic writes keep the old file when the write fails and give new files
the mode the umask allows (checkpoints, metrics and PNGs too), JSON is written strict (null for
NaN, with its meaning stated), and JSON reads fail in one line naming the file."""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from gn_det.utils.file_io import (NULL_MEANS, JSONFileError, atomic_write, read_json,
                                  write_json)
from helpers import REPO


def test_atomic_write_replaces_the_file_or_leaves_it(tmp_path):
    path = tmp_path / "out.json"
    write_json(str(path), {"a": 1})
    assert read_json(path) == {"a": 1}

    def fail(f):
        f.write(b'{"half": ')
        raise KeyboardInterrupt  # a kill mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), fail)
    assert read_json(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["out.json"]  # no temp file left behind


def test_atomic_write_check_runs_on_the_temp_file_before_the_rename(tmp_path):
    """A check that raises leaves the previous file (and no temp file); one that passes sees the
    written bytes under a temp name, then the file takes its name."""
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")
    seen = []

    def refuse(tmp):
        seen.append((os.path.basename(tmp), open(tmp, "rb").read()))
        raise ValueError("check failed")

    with pytest.raises(ValueError, match="check failed"):
        atomic_write(str(path), lambda f: f.write(b"new"), check=refuse)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.bin"]
    name, content = seen[0]
    assert content == b"new" and name != "model.bin" and name.endswith(".tmp")
    atomic_write(str(path), lambda f: f.write(b"new"), check=lambda tmp: None)
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.bin"]


@pytest.mark.parametrize("content, reason", [
    (None, "no such results file"),
    (b"[1, 2", "not valid JSON (line 1, column 6: Expecting ',' delimiter)"),
    (b"\xff\xfe[]", "not a UTF-8 text file; expected JSON"),
])
def test_read_json_errors_name_the_file(tmp_path, content, reason):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(JSONFileError) as e:
        read_json(path, "results")
    assert str(e.value) == f"{path}: {reason}" and e.value.reason == reason
    assert isinstance(e.value, ValueError)  # a user error for gn_det.cli.run_cli


def test_write_json_passes_dump_options(tmp_path):
    path = write_json(str(tmp_path / "m.json"), {"x": [1, 2]}, indent=1)
    assert json.loads(open(path).read()) == {"x": [1, 2]} and "\n" in open(path).read()


# Writes, in a child process, the files a training run and the tools leave behind, under each
# umask given on the command line (the umask is process-wide: the test process keeps its own).
WRITE_UNDER_UMASKS = """
import os, sys, time
import numpy as np, torch
import gn_det
from gn_det.engine import write_final_metrics
from gn_det.checkpoint import AtomicCheckpointer
from gn_det.utils.file_io import atomic_write
from gn_det.visualize import contact_sheet, write_png

root = sys.argv[1]
for mask in sys.argv[2:]:
    os.umask(int(mask, 8))
    out = os.path.join(root, mask)
    os.makedirs(out)
    AtomicCheckpointer(torch.nn.Linear(2, 2), save_dir=out).save("model_final")
    write_final_metrics(out, "cfg.yaml", 4, time.perf_counter(), {"bbox": {"AP": 12.5}})
    image = np.zeros((8, 8, 3), np.uint8)
    write_png(os.path.join(out, "image.png"), image)
    contact_sheet([image], ["one"], os.path.join(out, "contact_sheet.png"), "sheet")
    atomic_write(os.path.join(out, "raw.bin"), lambda f: f.write(b"x"))
"""


def test_written_files_get_the_mode_the_umask_gives(tmp_path):
    """Checkpoints, last_checkpoint, metrics_final.json and PNGs are 0644 under the usual umask
    022 (readable by a serving process or a colleague), 0600 under 077, 0640 under 027: what
    open() gives a new file; tempfile.mkstemp's 0600 must not leak through the atomic rename."""
    masks = {"022": 0o644, "077": 0o600, "027": 0o640}
    run = subprocess.run([sys.executable, "-c", WRITE_UNDER_UMASKS, str(tmp_path), *masks],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    names = {"model_final.pth", "last_checkpoint", "metrics_final.json", "image.png",
             "contact_sheet.png", "raw.bin"}
    for mask, mode in masks.items():
        assert set(os.listdir(tmp_path / mask)) == names  # no temp file left behind
        modes = {n: stat.S_IMODE(os.stat(tmp_path / mask / n).st_mode) for n in names}
        assert modes == dict.fromkeys(names, mode), (mask, {n: oct(m) for n, m in modes.items()})


def test_write_json_writes_strict_json_with_null_for_non_finite(tmp_path):
    class Scalar:  # a value json cannot encode, turned into a float by `default`
        def __float__(self):
            return float("nan")

    data = {"ap": float("nan"), "ar": [1.5, float("inf"), (float("-inf"), 2)],
            "f32": np.float32("nan"), "f64": np.float64(0.25), "n": 3, "ok": True,
            "none": None, "obj": Scalar()}
    path = write_json(str(tmp_path / "m.json"), data, default=float)
    text = open(path).read()

    def refuse(token):
        raise AssertionError(f"{token} is not JSON")

    loaded = json.loads(text, parse_constant=refuse)
    assert loaded == {"ap": None, "ar": [1.5, None, [None, 2]], "f32": None, "f64": 0.25,
                      "n": 3, "ok": True, "none": None, "obj": None,
                      "null_means": NULL_MEANS}  # nulls came from non-finite values: said so
    assert data["ap"] != data["ap"]  # the caller's data is left as it was


def test_write_json_states_what_null_means(tmp_path):
    path = write_json(str(tmp_path / "a.json"), {"x": None}, null_means="no value measured")
    assert read_json(path) == {"x": None, "null_means": "no value measured"}
    path = write_json(str(tmp_path / "b.json"), {"x": 1.0})  # nothing to explain
    assert read_json(path) == {"x": 1.0}
    path = write_json(str(tmp_path / "c.json"), [1.0, float("nan")])  # no place for a note
    assert read_json(path) == [1.0, None]
    with pytest.raises(TypeError, match="null_means needs a dict"):
        write_json(str(tmp_path / "d.json"), [None], null_means="x")
