"""Atomic file writes and JSON reads with one-line errors, shared by the trainer, the checkpointer,
the evaluation tools and the study."""
import json
import os
import tempfile
from typing import IO, Any, Callable, Optional


class JSONFileError(ValueError):
    """A JSON file that is missing or unreadable: `path: why`, one line."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def atomic_write(path: str, write: Callable[[IO[bytes]], object],
                 check: Optional[Callable[[str], object]] = None) -> None:
    """Write `path` through `write(file)` into a temp file in the same folder, fsync it, then
    rename it over `path`: a kill mid-write leaves the previous file intact. `check(temp path)`,
    if given, runs on the written file before the rename; if it raises, `path` is not touched
    (e.g. an exported model is checked before it takes the real name)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, data: Any, **dump_kwargs) -> str:
    """`data` as JSON at `path`, atomically; returns `path`."""
    text = json.dumps(data, **dump_kwargs)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def read_json(path, what: str = "JSON") -> Any:
    """The parsed content of a JSON file; JSONFileError names the file and says what is wrong
    (missing, not UTF-8, not valid JSON with line and column). `what` names the kind of file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise JSONFileError(path, f"no such {what} file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise JSONFileError(path, f"not valid JSON (line {e.lineno}, column {e.colno}: "
                                  f"{e.msg})") from None
    except UnicodeDecodeError:
        raise JSONFileError(path, "not a UTF-8 text file; expected JSON") from None
    except OSError as e:
        raise JSONFileError(path, f"cannot be read ({e.strerror or e})") from None
