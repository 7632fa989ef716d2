"""gn_det.utils.file_io: atomic writes keep the old file when the write fails, and JSON reads
fail in one line naming the file."""
import json
import os

import pytest

from gn_det.utils.file_io import JSONFileError, atomic_write, read_json, write_json


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
