"""tests/cli_harness.py: the judge catches a CLI run that does not end in one line, and an
in-process run's logging setup is undone afterwards."""
import logging

import pytest

from cli_harness import Case, judge, logger_state_restored


@pytest.mark.parametrize("code, err, problem", [
    (2, "tool: error: x.json: bad\n", ""),
    (0, "", "ended with 0, expected a non-zero exit"),
    (1, "Traceback (most recent call last):\n  ...\ntool: error: x.json: bad\n",
     "a traceback was shown"),
    (2, "tool: error: x.json: bad\ntool: error: again\n", "2 'tool: error:' lines, expected 1"),
    (2, "tool: error: something else\n", "'x.json: bad' not in the error line"),
    ("ValueError", "", "ended with ValueError, expected a non-zero exit"),
])
def test_judge_catches_what_is_not_one_line(code, err, problem):
    case = Case("datasets", "x", "error", "x.json: bad", build=None)
    assert judge(case, "tool", code, "", err)[1] == problem
    warning = Case("datasets", "w", "warning", "dropped 1", build=None)
    assert judge(warning, "tool", 0, "warning: dropped 1 box\n", "") == (
        "warning: dropped 1 box", "")
    assert judge(warning, "tool", 0, "", "")[1] == "no warning with 'dropped 1'"


def test_logger_state_restored_undoes_a_cli_logging_setup():
    from detectron2.utils.logger import setup_logger

    logger = logging.getLogger("gn_det")
    before = logger.handlers[:], logger.propagate, logger.level
    with logger_state_restored("gn_det"):
        # what train_net's default_setup does (__wrapped__: past detectron2's lru_cache)
        setup_logger.__wrapped__(name="gn_det", abbrev_name="gn_det", color=False)
        assert not logger.propagate and len(logger.handlers) > len(before[0])
    assert (logger.handlers, logger.propagate, logger.level) == before
