"""gn_det.study.tables: the metrics a cell row takes from the evaluator's metrics.json, and
results.csv / results.json / results.md."""
import csv
import json

import pytest

from gn_det.evaluation import evaluate_detections, load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair
from gn_det.study.tables import (FIELDS, format_markdown, summarize_metrics,
                                 write_csv, write_json)


@pytest.fixture(scope="module")
def metrics():
    gt, dets = make_coco_pair(num_images=12, dets_per_image=20, num_classes=3, seed=4)
    coco_gt = load_ground_truth(gt)
    return evaluate_detections(coco_gt, load_results(dets, coco_gt), [0.5, 0.75],
                               [0.3, 0.6], main_score=0.6).metrics


def test_summary_is_in_percent_at_the_main_thresholds(metrics):
    s = summarize_metrics(metrics)
    at = metrics["pr"]["0.5"]["0.6"]["overall"]
    assert s["AP"] == pytest.approx(100 * metrics["coco"]["AP"], abs=0.01)
    assert s["AP50"] == pytest.approx(100 * metrics["coco"]["AP50"], abs=0.01)
    assert s["recall"] == pytest.approx(100 * at["recall"], abs=0.01)
    assert s["precision"] == pytest.approx(100 * at["precision"], abs=0.01)
    assert (s["main_iou"], s["main_score"]) == (0.5, 0.6)
    assert 0 < s["AP"] < 100 and summarize_metrics({}) == {}


ROWS = [
    {"preset": "bn_all", "batch": 1, "status": "diverged", "error": "loss is not finite",
     "max_iter": 16, "base_lr": 0.0025, "train_s": 3.0, "s_per_iter": 0.2, "peak_rss_mb": 900.0,
     "steps": [12, 14]},
    {"preset": "bn_all", "batch": 2, "status": "done", "AP": 10.456, "AP50": 30.0, "recall": 50.0,
     "precision": 60.0, "main_iou": 0.5, "main_score": 0.5, "max_iter": 8, "base_lr": 0.005,
     "train_s": 2.0, "s_per_iter": 0.25, "peak_rss_mb": 950.0, "steps": [6, 7]},
    {"preset": "gn_all", "batch": 1, "status": "failed", "error": "killed by SIGKILL",
     "max_iter": 16, "base_lr": 0.0025, "peak_rss_mb": 4000.0},
]
PRESETS = [{"name": "bn_all", "description": "BN everywhere"},
           {"name": "gn_all", "description": "GN everywhere"}]


def test_csv_has_a_row_per_cell(tmp_path):
    path = write_csv(ROWS, str(tmp_path / "results.csv"))
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == FIELDS
    assert [(r["preset"], r["batch"], r["status"]) for r in rows] == [
        ("bn_all", "1", "diverged"), ("bn_all", "2", "done"), ("gn_all", "1", "failed")]
    assert rows[1]["AP"] == "10.456" and rows[1]["steps"] == "6 7" and rows[0]["AP"] == ""


def test_json_is_strict_with_settings_and_cells(tmp_path):
    path = write_json(ROWS, {"grid": {"batches": [1, 2]}, "machine": {"cores": 2}},
                      str(tmp_path / "results.json"))
    with open(path) as f:
        data = json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert data["grid"] == {"batches": [1, 2]} and data["machine"] == {"cores": 2}
    assert [set(c) for c in data["cells"]] == [set(FIELDS)] * 3
    assert data["cells"][1]["AP"] == 10.456 and data["cells"][0]["AP"] is None


def test_markdown_pivots_ap_and_lists_cells():
    text = format_markdown(ROWS, PRESETS, [1, 2], header="Command: `x`\n")
    lines = text.splitlines()
    assert lines[0] == "Command: `x`"
    pivot = [line for line in lines if line.startswith("| bn_all ") or line.startswith("| gn_all ")]
    assert [c.strip() for c in pivot[0].split("|")[1:-1]] == ["bn_all", "diverged", "10.5"]
    assert [c.strip() for c in pivot[1].split("|")[1:-1]] == ["gn_all", "failed", ""]
    assert "IoU 0.5, score >= 0.5" in text
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines if line.startswith("|")]
    assert ["bn_all", "2", "done", "10.5", "30.0", "50.0", "60.0", "8", "0.005", "2", "0.250",
            "950"] in cells
    assert "- `gn_all`: GN everywhere" in text
