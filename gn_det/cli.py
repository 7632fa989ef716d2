"""Command-line error handling shared by tools/: user errors end in one line and a non-zero
exit; `--debug` or GN_DET_DEBUG=1 shows the traceback."""
import json
import logging
import os
import sys
from typing import Callable, Iterable, List, Tuple, Type

# Errors caused by input (files, configs, values, the file system), as opposed to bugs.
USER_ERRORS: Tuple[Type[BaseException], ...] = (
    ValueError, KeyError, OSError, json.JSONDecodeError, FloatingPointError, NotImplementedError)
EXIT_USER_ERROR = 2
# detectron2's training loop logs the traceback of any exception before re-raising it.
TRACEBACK_LOGGERS = ("detectron2.engine.train_loop",)
_BRIEF_LIMIT = 160
# Failures that are no user error but still end in one line, in the log too: predicates added by
# the module that maps them to that line (gn_det.engine.launch: a lost peer).
ONE_LINE_FAILURES: List[Callable[[BaseException], bool]] = []


def debug_requested(argv=None) -> bool:
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
    return f"{prog}: error: {one_line(exc)} (rerun with --debug for the traceback)"


def run_cli(main: Callable[[], object], prog: str) -> None:
    """Run `main()`; a user error prints `<prog>: error: <one line>` and exits 2; a non-zero
    int that `main` returns becomes the exit status."""
    if debug_requested():
        status = main()
    else:
        try:
            status = main()
        except USER_ERRORS as e:
            print(error_line(prog, e), file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
    if isinstance(status, int) and not isinstance(status, bool) and status:
        sys.exit(status)


class _NoUserErrorTraceback(logging.Filter):
    """Replaces the traceback of a log record about a user error (or a ONE_LINE_FAILURES one) by
    the error's one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, USER_ERRORS)
                                or any(p(exc) for p in ONE_LINE_FAILURES)):
            record.msg, record.args = f"{record.getMessage()} {one_line(exc)}", ()
            record.exc_info, record.exc_text = None, None
        return True


def quiet_logged_tracebacks(names: Iterable[str] = TRACEBACK_LOGGERS) -> None:
    """Keep user errors (and ONE_LINE_FAILURES) one line in the log too: loggers that log an
    exception's traceback before re-raising it (detectron2's training loop) log only its message.
    No-op with --debug."""
    if debug_requested():
        return
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoUserErrorTraceback) for f in logger.filters):
            logger.addFilter(_NoUserErrorTraceback())
