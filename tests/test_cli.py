"""gn_det.cli: a user error is one `<prog>: error:` line and exit status 2, also in the log of
detectron2's training loop; --debug / GN_DET_DEBUG=1 gives the traceback; bugs are not hidden."""
import logging
import sys

import pytest

from gn_det.cli import quiet_logged_tracebacks, run_cli


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("GN_DET_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["tool"])


def fails(exc):
    def main():
        raise exc
    return main


@pytest.mark.parametrize("exc, line", [
    (ValueError("x.json: images[0].id: is '1'\n  expected an integer"),
     "tool: error: x.json: images[0].id: is '1' expected an integer"),
    (KeyError("Non-existent config key: MODEL.NORMZ"),
     "tool: error: Non-existent config key: MODEL.NORMZ"),
    (FileNotFoundError("config file 'a.yaml' does not exist"),
     "tool: error: config file 'a.yaml' does not exist"),
    (NotADirectoryError("out: not a directory"), "tool: error: out: not a directory"),
    (FloatingPointError("loss is not finite at iteration 5"),
     "tool: error: loss is not finite at iteration 5"),
])
def test_user_error_is_one_line_and_exit_2(exc, line, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(fails(exc), "tool")
    assert info.value.code == 2
    assert capsys.readouterr().err == f"{line} (rerun with --debug for the traceback)\n"


def test_debug_flag_or_env_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tool", "--debug"])
    with pytest.raises(ValueError, match="bad"):
        run_cli(fails(ValueError("bad")), "tool")
    monkeypatch.setattr(sys, "argv", ["tool"])
    monkeypatch.setenv("GN_DET_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        run_cli(fails(ValueError("bad")), "tool")


def test_bugs_keep_their_traceback_and_status_passes_through():
    with pytest.raises(AttributeError):  # not a user error: never folded into one line
        run_cli(fails(AttributeError("'NoneType' object has no attribute 'x'")), "tool")
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: 3, "tool")
    assert info.value.code == 3
    run_cli(lambda: 0, "tool")  # success: no exit
    run_cli(lambda: {"bbox": {}}, "tool")  # a non-int result is not a status


def test_training_loop_logs_user_errors_without_traceback(caplog):
    logger = logging.getLogger("detectron2.engine.train_loop")
    quiet_logged_tracebacks()
    quiet_logged_tracebacks()  # idempotent
    try:
        with caplog.at_level(logging.ERROR, logger=logger.name):
            for exc in (FloatingPointError("loss is not finite at iteration 5"),
                        RuntimeError("a bug")):
                try:
                    raise exc
                except Exception:
                    logger.exception("Exception during training:")
        user, bug = caplog.records
        assert user.getMessage() == "Exception during training: loss is not finite at iteration 5"
        assert user.exc_info is None and user.exc_text is None
        assert bug.exc_info is not None  # bugs keep their traceback
    finally:
        for f in list(logger.filters):
            logger.removeFilter(f)
