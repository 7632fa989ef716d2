"""Errors as one line: which exceptions are the user's input (not bugs), how an exception reads
as one line, and the failures that end in one line although they are no user error."""
import json
import os
import sys
from typing import Callable, List, Tuple, Type

# Errors caused by input (files, configs, values, the file system), as opposed to bugs.
USER_ERRORS: Tuple[Type[BaseException], ...] = (
    ValueError, KeyError, OSError, json.JSONDecodeError, FloatingPointError, NotImplementedError)
EXIT_USER_ERROR = 2
_BRIEF_LIMIT = 160
# Failures that are no user error but still end in one line, in the log too: predicates added by
# the module that maps them to that line (gn_det.engine.launch: a lost peer).
ONE_LINE_FAILURES: List[Callable[[BaseException], bool]] = []


def debug_requested(argv=None) -> bool:
    """Whether the user asked for tracebacks (--debug on the command line, or GN_DET_DEBUG=1)."""
    argv = sys.argv if argv is None else argv
    return "--debug" in argv or os.environ.get("GN_DET_DEBUG", "") not in ("", "0")


def one_line(exc: BaseException, brief: bool = False) -> str:
    """The error as one line. By default the whole message with newlines folded (KeyError's quotes
    dropped): for gn_det's own errors, which are written as one line. `brief`: `Type: ` and only
    the first sentence of the first line, at most 160 characters: for quoting another library's
    exception inside a gn_det message (torch's go on with advice in further sentences)."""
    if brief:
        text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        text = text.split(". ")[0]
        text = text if len(text) <= _BRIEF_LIMIT else text[:_BRIEF_LIMIT] + "..."
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(msg).split()) or type(exc).__name__


def error_line(prog: str, exc: BaseException) -> str:
    """`prog: error: <one line> (rerun with --debug for the traceback)`."""
    return f"{prog}: error: {one_line(exc)} (rerun with --debug for the traceback)"


def is_one_line_failure(exc: BaseException) -> bool:
    """A user error, or a failure one of ONE_LINE_FAILURES maps to one line."""
    return isinstance(exc, USER_ERRORS) or any(p(exc) for p in ONE_LINE_FAILURES)
