"""Command-line error handling shared by the CLIs: user errors end in one line and a non-zero
exit; `--debug` or GN_DET_DEBUG=1 shows the traceback (the line itself: gn_det.utils.errors)."""
import logging
import sys
from typing import Callable, Iterable

from .utils.errors import (EXIT_USER_ERROR, USER_ERRORS, debug_requested, error_line,
                           is_one_line_failure, one_line)

# detectron2's training loop logs the traceback of any exception before re-raising it.
TRACEBACK_LOGGERS = ("detectron2.engine.train_loop",)


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
        if exc is not None and is_one_line_failure(exc):
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
