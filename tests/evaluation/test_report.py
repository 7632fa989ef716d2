"""gn_det.evaluation.report: metrics.json / metrics.csv / comparison.csv writers, tables, and the
error-analysis files."""
import csv
import json

import pytest

from cli_harness import HAND_ANNS, HAND_DETS, coco_scene
from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.report import (csv_rows, format_coco_table, format_comparison_table,
                                      format_confusion_table, format_pr_table,
                                      write_comparison_csv, write_error_analysis,
                                      write_metrics_csv, write_metrics_json)
from gn_det.evaluation.results import load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair


@pytest.fixture(scope="module")
def two_runs():
    gt, dets = make_coco_pair(num_images=10, dets_per_image=20, num_classes=3, seed=2)
    coco = load_ground_truth(gt)
    a = evaluate_detections(coco, load_results(dets, coco)).metrics
    b = evaluate_detections(coco, load_results(dets[::3], coco)).metrics
    return {"bn": a, "gn": b}


def test_json_round_trip_is_strict(two_runs, tmp_path):
    m = dict(two_runs["bn"], coco=dict(two_runs["bn"]["coco"], APs=None))
    path = write_metrics_json(m, str(tmp_path / "sub" / "metrics.json"))
    text = open(path).read()
    saved = json.loads(text)
    assert "NaN" not in text and saved["coco"]["APs"] is None
    # the unit and the meaning of null, as metrics_final.json states them
    assert saved["ap_unit"] == "fraction (0-1)" and "no ground truth" in saved["null_means"]
    assert saved["coco"]["AP"] == pytest.approx(m["coco"]["AP"]) and 0 <= saved["coco"]["AP"] <= 1


def test_csv_has_every_number_once(two_runs, tmp_path):
    m = two_runs["bn"]
    path = write_metrics_csv(m, str(tmp_path / "metrics.csv"))
    rows = list(csv.DictReader(open(path)))
    n_classes = len(m["ap_per_class"])
    n_pr = sum(len(by_score) for by_score in m["pr"].values()) * (n_classes + 1)
    n_tide = 6 + 2 + 5 + 4  # dAP per type and of the two oracles, FP and FN split by type
    assert len(rows) == 12 + n_classes + n_pr + n_classes + 1 + n_tide + n_classes
    tide = {r["name"]: float(r["value"]) for r in rows if r["kind"] == "tide_dap"}
    assert tide["missed"] == pytest.approx(m["tide"]["dAP"]["missed"], abs=1e-6)
    thr = {r["name"]: r for r in rows if r["kind"] == "threshold"}
    for name, entry in m["thresholds"]["classes"].items():
        assert float(thr[name]["score"]) == pytest.approx(entry["threshold"], rel=1e-5)
        assert int(thr[name]["tp"]) == entry["tp"]
    ap = [r for r in rows if r["kind"] == "coco" and r["name"] == "AP"][0]
    assert float(ap["value"]) == pytest.approx(m["coco"]["AP"], rel=1e-5)
    best = [r for r in rows if r["kind"] == "best_f1" and r["name"] == "overall"][0]
    assert float(best["score"]) == pytest.approx(m["best_f1_overall"]["score"], rel=1e-5)
    assert len(csv_rows(m)) == len(rows)


def test_tables(two_runs):
    table = format_pr_table(two_runs["bn"])
    assert table.splitlines()[0].startswith("P/R/F1 at IoU 0.5, score >= 0.5 "
                                            "(overall: summed over classes); thr:")
    assert "class_01" in table and "| overall" in table
    header = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert header[-4:] == ["thr", "P@thr", "R@thr", "F1@thr"]
    row = [c.strip() for c in table.splitlines()[4].strip("|").split("|")]
    entry = two_runs["bn"]["thresholds"]["classes"][row[0]]
    assert row[-4:] == [f"{entry['threshold']:.3g}", f"{entry['precision']:.3f}",
                        f"{entry['recall']:.3f}", f"{entry['f1']:.3f}"]
    coco = format_coco_table(two_runs)
    delta = two_runs["gn"]["coco"]["AP"] - two_runs["bn"]["coco"]["AP"]
    assert f"{delta:+.3f}" in coco
    comparison = format_comparison_table(two_runs)
    assert "P bn" in comparison and "F1 gn" in comparison


def test_comparison_csv(two_runs, tmp_path):
    path = write_comparison_csv(two_runs, str(tmp_path / "comparison.csv"))
    rows = list(csv.DictReader(open(path)))
    best = [r for r in rows if r["kind"] == "best_f1" and r["name"] == "overall"]
    assert len(best) == 1 and best[0]["score"] == "best"
    assert float(best[0]["value:gn"]) == pytest.approx(two_runs["gn"]["best_f1_overall"]["score"],
                                                       rel=1e-5)
    pr = [r for r in rows if r["kind"] == "pr" and r["name"] == "overall" and r["iou"] == "0.5"
          and r["score"] == "0.3"][0]
    assert float(pr["recall:bn"]) == pytest.approx(
        two_runs["bn"]["pr"]["0.5"]["0.3"]["overall"]["recall"], rel=1e-5)


def test_confusion_table_and_error_analysis_files(tmp_path):
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=5)
    coco = load_ground_truth(gt)
    ev = evaluate_detections(coco, load_results(dets, coco))
    lines = format_confusion_table(ev).splitlines()
    assert lines[0] == ("Confusion matrix at IoU 0.5, score >= 0.5 (rows: ground truth, columns: "
                        "predicted)")
    assert [c.strip() for c in lines[1].strip("|").split("|")] == [
        "GT \\ predicted", "c1", "c2", "c3", "background"]
    assert [c.strip() for c in lines[-1].strip("|").split("|")] == [
        "background", "2", "3", "1", "-"]
    names = [p.rsplit("/", 1)[1] for p in write_error_analysis(ev, str(tmp_path / "a"), False)]
    assert names == ["confusion_matrix.csv"]
    names = [p.rsplit("/", 1)[1] for p in write_error_analysis(ev, str(tmp_path / "b"))]
    assert names == ["confusion_matrix.csv", "confusion_matrix.png", "p_curve.png",
                     "r_curve.png", "f1_curve.png", "tide_errors.png"]
