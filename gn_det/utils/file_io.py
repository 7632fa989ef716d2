"""Atomic file writes (with the mode the umask gives a new file), strict JSON writes and JSON reads
with one-line errors, shared by the trainer, the checkpointer, the evaluation tools and the
study."""
import json
import math
import numbers
import os
import secrets
from typing import IO, Any, Callable, Optional, Tuple

# What null stands for in a file written by write_json when the writer says nothing more precise.
NULL_MEANS = ("not a finite number: undefined (NaN, e.g. no ground truth to measure against) or "
              "infinite")


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
    (e.g. an exported model is checked before it takes the real name).

    The file gets the mode open() gives a new file: 0666 less the process umask (0644 under the
    usual 022), and the folder's default ACL where it has one. The kernel applies both when the
    temp file is created with mode 0666, so the umask is never read (os.umask can only be read
    by setting it, which races with other threads creating files)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp(folder, f".{os.path.basename(path)}.")
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


def _create_temp(folder: str, prefix: str) -> Tuple[int, str]:
    """A new, uniquely named `prefix<random>.tmp` in `folder`, opened for writing with mode 0666
    (less the umask): tempfile.mkstemp's exclusive creation, without its fixed mode 0600."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temp file name {prefix}*.tmp after 100 tries")


def finite_or_null(data: Any) -> Tuple[Any, int]:
    """`data` with every NaN / infinite float (numpy's too) in its dicts, lists and tuples as
    None, and how many there were: what strict JSON can hold."""
    if isinstance(data, dict):
        pairs = [(k, finite_or_null(v)) for k, v in data.items()]
        return {k: v for k, (v, _) in pairs}, sum(n for _, (_, n) in pairs)
    if isinstance(data, (list, tuple)):
        items = [finite_or_null(v) for v in data]
        return [v for v, _ in items], sum(n for _, n in items)
    if isinstance(data, numbers.Real) and not isinstance(data, numbers.Integral):
        value = float(data)
        return (value, 0) if math.isfinite(value) else (None, 1)
    return data, 0


def write_json(path: str, data: Any, null_means: Optional[str] = None, **dump_kwargs) -> str:
    """`data` as strict JSON at `path`, atomically; returns `path`. NaN and infinities (which
    json.dumps would write as the non-JSON `NaN` / `Infinity`) become null. A dict gets a
    top-level "null_means" entry saying what null stands for: `null_means`, or, when it is not
    given and a value was not finite, NULL_MEANS; other values cannot carry the note, so pass
    `null_means` only with a dict."""
    data, replaced = finite_or_null(data)
    if isinstance(data, dict) and (null_means or (replaced and "null_means" not in data)):
        data = dict(data, null_means=null_means or NULL_MEANS)
    elif null_means:
        raise TypeError(f"{path}: null_means needs a dict to write it in, got "
                        f"{type(data).__name__}")
    default = dump_kwargs.get("default")
    if default is not None:  # e.g. default=float on a numpy scalar or tensor holding NaN
        dump_kwargs["default"] = lambda obj: finite_or_null(default(obj))[0]
    dump_kwargs["allow_nan"] = False
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
