"""gn_det.study.tables: the metrics a cell row takes from the evaluator's metrics.json, and
results.csv / results.json / results.md."""
import csv
import json

import pytest

from gn_det.evaluation import evaluate_detections, load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair
from gn_det.study.tables import (FIELDS, differences, format_markdown, summarize_metrics,
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


def row(preset, batch, seed, status="done", ap=None, **extra):
    return dict({"design": "controlled", "preset": preset, "batch": batch, "seed": seed,
                 "status": status, "AP": ap, "AP50": None if ap is None else ap + 20,
                 "max_iter": 8, "accumulate_steps": 8 // batch, "base_lr": 0.02,
                 "main_iou": 0.5, "main_score": 0.5}, **extra)


ROWS = [
    row("bn_all", 1, 0, ap=10.0), row("bn_all", 1, 1, ap=12.0), row("bn_all", 1, 2, ap=11.0),
    row("bn_all", 8, 0, ap=20.0), row("bn_all", 8, 1, ap=23.0), row("bn_all", 8, 2, ap=21.0),
    row("gn_all", 1, 0, ap=18.0), row("gn_all", 1, 1, "diverged", error="loss is not finite"),
    row("gn_all", 1, 2, ap=19.0),
    row("gn_all", 8, 0, ap=18.5, steps=[6, 7], recall=50.0, precision=60.0, train_s=2.0,
        s_per_iter=0.25, peak_rss_mb=950.0),
    row("gn_all", 8, 1, "failed", error="killed by SIGKILL", peak_rss_mb=4000.0),
]
PRESETS = [{"name": "bn_all", "description": "BN everywhere"},
           {"name": "gn_all", "description": "GN everywhere"}]


def test_csv_has_a_row_per_cell(tmp_path):
    path = write_csv(ROWS, str(tmp_path / "results.csv"))
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == FIELDS
    assert [(r["preset"], r["batch"], r["seed"], r["status"]) for r in rows[6:9]] == [
        ("gn_all", "1", "0", "done"), ("gn_all", "1", "1", "diverged"),
        ("gn_all", "1", "2", "done")]
    assert rows[9]["AP"] == "18.5" and rows[9]["steps"] == "6 7" and rows[7]["AP"] == ""


def test_json_is_strict_with_settings_and_cells(tmp_path):
    path = write_json(ROWS, {"grid": {"batches": [1, 8]}, "machine": {"cores": 2}},
                      str(tmp_path / "results.json"))
    with open(path) as f:
        data = json.loads(f.read(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert data["grid"] == {"batches": [1, 8]} and data["machine"] == {"cores": 2}
    assert [set(c) for c in data["cells"]] == [set(FIELDS)] * len(ROWS)
    assert data["cells"][9]["AP"] == 18.5 and data["cells"][7]["AP"] is None
    assert data["units"]["percent (0-100)"] == ["AP", "AP50", "AP75", "recall", "precision", "f1"]


def _table(text, title):
    """The rows of the Markdown table after the line starting with `title`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            if out:
                break
            continue
        out.append([c.strip() for c in line.split("|")[1:-1]])
    return out[2:]  # no header and rule


def test_markdown_shows_mean_and_interval_over_seeds_and_counts_the_rest():
    text = format_markdown(ROWS, PRESETS, [1, 8], header="Command: `x`\n")
    assert text.splitlines()[0] == "Command: `x`"
    ap = _table(text, "Box AP (COCO")
    h = 4.3027 * 1.0 / 3 ** 0.5  # t(0.975, 2) * sd / sqrt(3), sd = 1 for 10, 12, 11
    assert ap[0] == ["bn_all", f"11.0 ± {h:.1f} (3)", f"21.3 ± {4.3027 * 1.5275 / 3 ** 0.5:.1f} "
                     "(3)"]
    assert ap[1] == ["gn_all", f"18.5 ± {12.7062 * 0.7071 / 2 ** 0.5:.1f} (2) 1 diverged",
                     "18.5 (1) 1 failed"]
    ap50 = _table(text, "Box AP50")
    assert ap50[0][1].startswith("31.0 ± ")
    assert "95 % t-interval over seeds" in text


def test_markdown_verdicts_pair_by_seed():
    text = format_markdown(ROWS, PRESETS, [1, 8])
    verdicts = [line for line in text.splitlines() if line.startswith("- ") and " is " in line]
    bn = next(v for v in verdicts if v.startswith("- bn_all at 1 img/GPU is"))
    # per-seed differences -10, -11, -10: mean -10.33, sd 0.577
    assert bn.startswith(f"- bn_all at 1 img/GPU is 10.3 ± {4.3027 * 0.57735 / 3 ** 0.5:.1f} AP "
                         f"below bn_all at 8 img/GPU (paired by seed, n = 3")
    assert bn.endswith("real: the interval excludes 0.")
    gn = [v for v in verdicts if v.startswith("- gn_all at 1 img/GPU is")]
    assert len(gn) == 1 and "above bn_all at 1 (paired by seed, n = 2" in gn[0]
    assert ("- gn_all at 1 img/GPU vs gn_all at 8 img/GPU: -0.5 AP from one seed; no "
            "interval, no verdict.") in text.splitlines()


def test_differences_default_to_bn_all_as_the_reference():
    diffs = differences(ROWS, ["gn_all", "bn_all"], [1, 8])
    assert [(d["a"], d["b"]) for d in diffs] == [
        ("gn_all at 1 img/GPU", "gn_all at 8 img/GPU"),
        ("bn_all at 1 img/GPU", "bn_all at 8 img/GPU"),
        ("gn_all at 1 img/GPU", "bn_all at 1"), ("gn_all at 8 img/GPU", "bn_all at 8")]
    assert [d["diff"].n for d in diffs] == [1, 3, 2, 1]
    other = differences(ROWS, ["gn_all", "bn_all"], [1, 8], reference="gn_all")
    assert other[2]["a"] == "bn_all at 1 img/GPU" and other[2]["b"] == "gn_all at 1"


def test_differences_only_between_cells_the_grid_ran():
    """A preset run at one batch only (--preset-batches) gets no batch verdict and is compared
    with the reference where both ran."""
    rows = ROWS + [row("frn_all", 8, s, ap=17.0 + s) for s in range(3)]
    diffs = differences(rows, ["bn_all", "gn_all", "frn_all"], [1, 8])
    pairs = [(d["a"], d["b"]) for d in diffs]
    assert ("frn_all at 8 img/GPU", "bn_all at 8") in pairs
    assert not any(a.startswith("frn_all at 1") for a, _ in pairs)
    text = format_markdown(rows, PRESETS + [{"name": "frn_all", "description": "FRN"}], [1, 8])
    assert _table(text, "Box AP (COCO")[2][:2] == ["frn_all", ""]


def test_per_cell_table_lists_every_seed():
    cells = _table(format_markdown(ROWS, PRESETS, [1, 8]), "Per cell")
    assert len(cells) == len(ROWS)
    assert ["gn_all", "8", "0", "done", "18.5", "38.5", "50.0", "60.0", "8 x 1", "0.02", "2",
            "0.250", "950"] in cells
