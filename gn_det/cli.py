"""Command-line error handling shared by tools/: user errors end in one line and a non-zero
exit; `--debug` or GN_DET_DEBUG=1 shows the traceback."""
import json
import os
import sys
from typing import Callable, Tuple, Type

# Errors caused by input (files, configs, values), as opposed to bugs.
USER_ERRORS: Tuple[Type[BaseException], ...] = (
    ValueError, KeyError, FileNotFoundError, IsADirectoryError, PermissionError,
    json.JSONDecodeError, FloatingPointError, NotImplementedError)


def debug_requested(argv=None) -> bool:
    argv = sys.argv if argv is None else argv
    return "--debug" in argv or os.environ.get("GN_DET_DEBUG", "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    """The error as one line: KeyError's quotes dropped, newlines folded."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(msg).split()) or type(exc).__name__


def run_cli(main: Callable[[], object], prog: str) -> None:
    """Run `main()`; a user error prints `<prog>: error: <one line>` and exits 2."""
    if debug_requested():
        main()
        return
    try:
        main()
    except USER_ERRORS as e:
        print(f"{prog}: error: {one_line(e)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(2)
