"""gn_det.evaluation.metrics: the metrics.json structure, its consistency, and edge cases."""
import logging

import pytest

from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.results import load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair


def fractions(node, path="metrics"):
    """Every float leaf of the P/R/COCO part, with its path."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from fractions(v, f"{path}/{k}")
    elif isinstance(node, float):
        yield path, node


@pytest.fixture(scope="module")
def evaluation():
    gt, dets = make_coco_pair(num_images=20, dets_per_image=30, num_classes=4, seed=7)
    coco = load_ground_truth(gt)
    return evaluate_detections(coco, load_results(dets, coco), [0.5, 0.75], [0.3, 0.7],
                               main_score=0.5)


def test_structure(evaluation):
    m = evaluation.metrics
    assert list(m["coco"]) == ["AP", "AP50", "AP75", "APs", "APm", "APl",
                               "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert list(m["pr"]) == ["0.5", "0.75"]
    assert list(m["pr"]["0.5"]) == ["0.3", "0.5", "0.7"]  # main score added, ascending
    at = m["pr"]["0.5"]["0.5"]
    assert set(at["overall"]) == {"precision", "recall", "f1", "tp", "fp", "fn"}
    assert list(at["per_class"]) == [f"class_{i:02d}" for i in range(1, 5)]
    assert set(m["best_f1"]) == set(at["per_class"])
    assert {"score", "precision", "recall", "f1"} <= set(m["best_f1"]["class_01"])
    for path, v in fractions({k: m[k] for k in ("coco", "pr", "best_f1", "ap_per_class")}):
        if not path.endswith("/score"):
            assert 0.0 <= v <= 1.0, path


def test_overall_is_the_sum_over_classes(evaluation):
    s = evaluation.metrics["settings"]
    for by_score in evaluation.metrics["pr"].values():
        for at in by_score.values():
            for key in ("tp", "fp", "fn"):
                assert at["overall"][key] == sum(v[key] for v in at["per_class"].values())
            o = at["overall"]
            assert o["tp"] + o["fn"] == sum(s["num_gt"].values())
            assert o["precision"] == pytest.approx(o["tp"] / (o["tp"] + o["fp"]))
    # higher score threshold: fewer detections kept
    by_score = evaluation.metrics["pr"]["0.5"]
    kept = [by_score[s]["overall"]["tp"] + by_score[s]["overall"]["fp"] for s in by_score]
    assert kept == sorted(kept, reverse=True)


def test_best_f1_beats_every_operating_point(evaluation):
    m = evaluation.metrics
    for name, best in m["best_f1"].items():
        for at in m["pr"]["0.5"].values():
            assert best["f1"] >= at["per_class"][name]["f1"] - 1e-12


def test_empty_results_give_zeros(caplog):
    gt, _ = make_coco_pair(num_images=4, num_classes=3, seed=1)
    coco = load_ground_truth(gt)
    with caplog.at_level(logging.WARNING):
        m = evaluate_detections(coco, load_results([], coco)).metrics
    assert "no detections" in caplog.text
    assert m["coco"]["AP"] == 0.0
    for at in m["pr"]["0.5"].values():
        assert at["overall"]["precision"] == at["overall"]["recall"] == at["overall"]["f1"] == 0.0
    assert all(b["score"] is None and b["f1"] == 0.0 for b in m["best_f1"].values())


@pytest.mark.parametrize("kw, words", [
    ({"iou_thresholds": [0.0]}, "outside (0, 1]"),
    ({"iou_thresholds": []}, "at least one IoU"),
    ({"score_thresholds": []}, "at least one score"),
    ({"main_score": float("nan")}, "not a finite number"),
])
def test_bad_thresholds(kw, words):
    gt, dets = make_coco_pair(num_images=2, num_classes=2)
    coco = load_ground_truth(gt)
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("]", r"\]")):
        evaluate_detections(coco, load_results(dets, coco), **kw)
