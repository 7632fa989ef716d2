"""tools/check_bad_inputs.py: every bad input but the training runs ends as the issue asks (one
`<prog>: error:` line, exit 2, no traceback; boxes and empty results as counted warnings), the
table and counts come out, and the judge catches a case that ends badly."""
import json

import pytest

from conftest import load_tool



@pytest.fixture(scope="module")
def tool():
    return load_tool("check_bad_inputs")


def test_cases_cover_every_group_of_the_issue(tool):
    cases = tool.all_cases()
    groups = {g: [c for c in cases if c.group == g] for g in tool.GROUPS}
    assert all(groups.values()), {g: len(c) for g, c in groups.items()}
    names = {f"{c.group}: {c.name}" for c in cases}
    assert len(names) == len(cases)  # unique names, so -k can pick each
    for expected in ("datasets: truncated JSON", "images: 16-bit image", "results: negative score",
                     "configs: both group modes set", "weights: shape mismatch",
                     "security: VOC filename with ../ (path traversal)", "training: NaN loss"):
        assert expected in names
    # Only the expected-valid inputs end in exit 0: box clean-up, empty results, 8-bit modes,
    # WS without norm, and --resume after a kill.
    assert {c.name for c in cases if c.expect != "error"} >= {
        "bbox with NaN", "empty list (valid: zeros)", "RGBA image (converted by detectron2)"}
    assert tool.select(cases, None, False, None) == [c for c in cases if c.group != "training"]


def test_every_case_but_the_training_runs_ends_as_expected(tool, tmp_path, capsys):
    """All groups except the slow training faults (those: test_checkpoint, test_launch)."""
    report = tmp_path / "outcomes.json"
    status = tool.main(["--json", str(report)])
    out = capsys.readouterr().out
    outcomes = json.loads(report.read_text())
    assert status == 0, [o for o in outcomes if o["problem"]]
    assert len(outcomes) > 60 and not any(o["problem"] for o in outcomes)
    for o in outcomes:
        if o["expect"] == "error":
            assert o["ended"] == "exit 2" and ": error: " in o["message"], o
        else:
            assert o["ended"].startswith("exit 0"), o
    through_train_net = [o for o in outcomes if o["group"] in ("configs", "weights")
                         and o["expect"] == "error" and "convert_weights" not in o["case"]]
    assert len(through_train_net) > 20
    assert all(o["message"].startswith("train_net: error: ") for o in through_train_net)
    assert out.splitlines()[0] == "| # | group | bad input | ended | message | as expected |"
    assert f"{len(outcomes)} bad inputs tried: " in out and "all ended as expected" in out
    assert "$TMP/" in out and "gn_det_bad_inputs_" not in out


def test_a_real_subprocess_case(tool, tmp_path):
    report = tmp_path / "outcomes.json"
    assert tool.main(["--subprocess", "-k", "datasets: duplicate image id", "--json",
                      str(report)]) == 0
    (o,) = json.loads(report.read_text())
    assert o["ended"] == "exit 2" and "duplicates images[0].id" in o["message"]


@pytest.mark.parametrize("code, err, problem", [
    (2, "tool: error: x.json: bad\n", ""),
    (0, "", "ended with 0, expected a non-zero exit"),
    (1, "Traceback (most recent call last):\n  ...\ntool: error: x.json: bad\n",
     "a traceback was shown"),
    (2, "tool: error: x.json: bad\ntool: error: again\n", "2 'tool: error:' lines, expected 1"),
    (2, "tool: error: something else\n", "'x.json: bad' not in the error line"),
    ("ValueError", "", "ended with ValueError, expected a non-zero exit"),
])
def test_judge_catches_what_is_not_one_line(tool, code, err, problem):
    case = tool.Case("datasets", "x", "error", "x.json: bad", build=None)
    assert tool.judge(case, "tool", code, "", err)[1] == problem
    warning = tool.Case("datasets", "w", "warning", "dropped 1", build=None)
    assert tool.judge(warning, "tool", 0, "warning: dropped 1 box\n", "") == (
        "warning: dropped 1 box", "")
    assert tool.judge(warning, "tool", 0, "", "")[1] == "no warning with 'dropped 1'"
