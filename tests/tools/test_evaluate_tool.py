"""tools/evaluate.py end to end in a subprocess: outputs, comparison, and one-line errors."""
import csv
import json
import os
import subprocess
import sys

import pytest

from gn_det.evaluation.synthetic import make_coco_pair

from helpers import REPO

ROOT = REPO


def evaluate(*args, cwd=None):
    """tools/evaluate.py in a subprocess under umask 022 (what the modes below expect)."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"),
                          preexec_fn=lambda: os.umask(0o022))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate_tool")
    gt, dets = make_coco_pair(num_images=15, dets_per_image=30, num_classes=4, seed=11)
    (tmp / "gt.json").write_text(json.dumps(gt))
    (tmp / "a.json").write_text(json.dumps(dets))
    worse = [dict(d, score=round(d["score"] ** 2, 4)) for d in dets[::2]]
    (tmp / "b.json").write_text(json.dumps(worse))
    return tmp


def test_single_run_writes_outputs(files):
    out = files / "single"
    r = evaluate("--gt", files / "gt.json", "--dt", files / "a.json", "--out", out,
                 "--iou", "0.5", "0.75", "--score", "0.3", "0.5")
    assert r.returncode == 0, r.stderr
    for f in ("metrics.json", "metrics.csv", "thresholds.json", "pr_curves.png",
              "confusion_matrix.csv", "confusion_matrix.png", "p_curve.png", "r_curve.png",
              "f1_curve.png", "tide_errors.png"):
        assert (out / f).stat().st_size > 0, f
        assert (out / f).stat().st_mode & 0o777 == 0o644, f  # the umask's mode (022 here)
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["pr"]) == ["0.5", "0.75"] and list(m["pr"]["0.5"]) == ["0.3", "0.5"]
    assert 0.0 <= m["coco"]["AP"] <= 1.0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    pr = [x for x in rows if x["kind"] == "pr" and x["name"] == "overall" and x["iou"] == "0.5"
          and x["score"] == "0.5"]
    assert len(pr) == 1
    assert float(pr[0]["recall"]) == pytest.approx(m["pr"]["0.5"]["0.5"]["overall"]["recall"],
                                                   abs=1e-6)
    assert {x["kind"] for x in rows} == {"coco", "ap", "pr", "best_f1", "tide_dap", "tide_fp",
                                         "tide_fn", "threshold"}
    assert "P/R/F1 at IoU 0.5, score >= 0.5" in r.stdout and "| overall" in r.stdout
    assert (out / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the confusion matrix at the main IoU (first --iou) and --main-score, from the same matches
    cm = m["confusion"]
    assert (cm["iou"], cm["score"]) == (0.5, 0.5)
    table = list(csv.reader((out / "confusion_matrix.csv").open()))
    assert [[int(v) for v in row[1:]] for row in table[1:]] == cm["matrix"]
    per_class = m["pr"]["0.5"]["0.5"]["per_class"]
    for k, name in enumerate(cm["labels"][:-1]):
        assert cm["matrix"][k][k] == per_class[name]["tp"]
        assert sum(cm["matrix"][k]) == per_class[name]["tp"] + per_class[name]["fn"]
        assert sum(row[k] for row in cm["matrix"]) == per_class[name]["tp"] + per_class[name]["fp"]
    assert "Confusion matrix at IoU 0.5, score >= 0.5" in r.stdout


def test_compares_two_runs(files):
    out = files / "compare"
    r = evaluate("--gt", files / "gt.json", "--dt", files / "a.json", files / "b.json",
                 "--names", "bn", "gn", "--out", out)
    assert r.returncode == 0, r.stderr
    for f in ("bn/metrics.json", "gn/metrics.json", "bn/metrics.csv", "comparison.csv",
              "pr_curves.png", "bn/confusion_matrix.csv", "gn/f1_curve.png",
              "gn/confusion_matrix.png"):
        assert (out / f).is_file(), f
    bn = json.loads((out / "bn" / "metrics.json").read_text())
    gn = json.loads((out / "gn" / "metrics.json").read_text())
    assert bn["coco"]["AP"] != gn["coco"]["AP"]
    header = next(csv.reader((out / "comparison.csv").open()))
    assert "recall:bn" in header and "recall:gn" in header
    assert "P bn" in r.stdout and "P gn" in r.stdout and "delta" in r.stdout


@pytest.mark.parametrize("case, words", [
    ("unknown_image", "entry 1: 'image_id': is 999, not an image of the ground truth"),
    ("unknown_category", "entry 1: 'category_id': is 42, not a category of the ground truth"),
    ("missing_file", "no such results file"),
    ("names", "2 names for 1 --dt files"),
    ("iou", "IoU threshold 1.5 is outside (0, 1]"),
])
def test_bad_input_is_one_line_without_traceback(files, case, words):
    dets = json.loads((files / "a.json").read_text())[:3]
    bad = files / f"{case}.json"
    extra = []
    if case == "unknown_image":
        dets[1]["image_id"] = 999
    elif case == "unknown_category":
        dets[1]["category_id"] = 42
    elif case == "names":
        extra = ["--names", "x", "y"]
    elif case == "iou":
        extra = ["--iou", "1.5"]
    if case != "missing_file":
        bad.write_text(json.dumps(dets))
    r = evaluate("--gt", files / "gt.json", "--dt", bad, "--out", files / "bad", *extra)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("evaluate.py: error:")]
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_debug_shows_traceback(files):
    r = evaluate("--gt", files / "gt.json", "--dt", files / "nope.json", "--out", files / "dbg",
                 "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "ResultsError" in r.stderr


@pytest.mark.slow  # three commands in subprocesses
def test_thresholds_file_gives_the_deployed_models_numbers(files):
    """--thresholds applies a thresholds.json to the results before everything: P/R at score 0
    then equal, per class, what the file says its thresholds give; show_errors --thresholds
    counts the same TP / FP / FN."""
    chosen = files / "chosen"
    r = evaluate("--gt", files / "gt.json", "--dt", files / "a.json", "--out", chosen,
                 "--no-plot")
    assert r.returncode == 0, r.stderr
    thresholds = json.loads((chosen / "thresholds.json").read_text())["classes"]
    out = files / "deployed"
    r = evaluate("--gt", files / "gt.json", "--dt", files / "a.json", "--out", out, "--no-plot",
                 "--score", "0", "--iou", "0.5", "--thresholds", chosen / "thresholds.json")
    assert r.returncode == 0, r.stderr
    assert "score thresholds" in r.stderr and "kept" in r.stderr
    per_class = json.loads((out / "metrics.json").read_text())["pr"]["0.5"]["0"]["per_class"]
    for name, entry in thresholds.items():
        got = per_class[name]
        assert (got["tp"], got["fp"], got["fn"]) == (entry["tp"], entry["fp"], entry["fn"]), name
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "show_errors.py"), "--gt",
                        str(files / "gt.json"), "--dt", str(files / "a.json"), "--image-root",
                        str(files), "--out", str(files / "errors"), "--num", "0", "--score", "0",
                        "--thresholds", str(chosen / "thresholds.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    tp = sum(e["tp"] for e in thresholds.values())
    fp = sum(e["fp"] for e in thresholds.values())
    assert f"TP {tp}, FP {fp} " in r.stdout
