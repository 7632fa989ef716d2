"""gn_det.evaluation.thresholds: the rules (best F1, target precision) against a brute-force search
over every score, thresholds.json round trip, one-line errors naming file and field, and the
applier on COCO results and on detectron2 Instances (the same detections kept)."""
import json

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from gn_det.evaluation.matching import curve
from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.results import load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair
from gn_det.evaluation.thresholds import (FORMAT, Thresholds, ThresholdsError, apply_thresholds,
                                          choose_thresholds, parse_thresholds, read_thresholds,
                                          threshold_results, write_thresholds)


@pytest.fixture(scope="module")
def ev():
    gt, dets = make_coco_pair(num_images=20, dets_per_image=30, num_classes=4, seed=3)
    coco = load_ground_truth(gt)
    return evaluate_detections(coco, load_results(dets, coco), (0.5,), (0.5,), 0.5)


def brute_force(ev, k, target=None):
    """(threshold, precision, recall) by trying every distinct score of class k."""
    c = curve(ev.matches, 0.5, k)
    best = None
    for s, p, r, f in zip(c.scores, c.precision, c.recall, c.f1):
        if target is None:
            if f > 0 and (best is None or f > best[3]):
                best = (s, p, r, f)
        elif p >= target and (best is None or s < best[0]):
            best = (s, p, r, f)
    return best


@pytest.mark.parametrize("target", [None, 0.5, 0.8])
def test_rules_equal_a_brute_force_search(ev, target):
    content = choose_thresholds(ev.matches, 0.5, ev.class_names, target)
    assert content["rule"] == ("best_f1" if target is None else "target_precision")
    for k, name in enumerate(ev.class_names):
        entry, ref = content["classes"][name], brute_force(ev, k, target)
        if ref is None:
            assert entry["threshold"] is None and entry["tp"] == 0
            continue
        assert entry["threshold"] == ref[0]
        assert (entry["precision"], entry["recall"]) == pytest.approx(ref[1:3])
        if target is not None:
            assert entry["precision"] >= target
        # and what the entry reports is what keeping score >= threshold gives
        m = ev.matches
        kept = (m.labels == k) & (m.scores >= entry["threshold"])
        assert entry["tp"] == int((m.tp[0] & kept).sum())
        assert entry["fp"] == int((m.fp[0] & kept).sum())


def test_unreachable_target_keeps_none_of_the_class(ev):
    content = choose_thresholds(ev.matches, 0.5, ev.class_names, 1.0)
    nulls = [n for n, e in content["classes"].items() if e["threshold"] is None]
    assert nulls  # synthetic classes never reach precision 1 at any score but their top one
    t = parse_thresholds(content)
    assert np.isinf(t.for_class_names(nulls)).all()


def test_round_trip_and_apply_to_coco_results(ev, tmp_path):
    path = write_thresholds(ev.thresholds, str(tmp_path / "thresholds.json"))
    t = read_thresholds(path)
    assert t.rule == "best_f1" and set(t.by_name) == set(ev.class_names)
    dets = [{"image_id": 1, "category_id": c, "bbox": [0, 0, 1, 1], "score": s}
            for c in (1, 2) for s in (0.1, 0.5, 0.9)]
    kept = apply_thresholds(dets, t)
    assert kept == [d for d in dets if d["score"] >= t.by_category_id[d["category_id"]]]


def test_apply_to_instances_keeps_what_the_results_path_keeps(ev):
    t = parse_thresholds(ev.thresholds)
    names = ev.class_names
    rng = np.random.default_rng(0)
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.tensor(rng.uniform(0, 50, (40, 4)), dtype=torch.float32))
    inst.scores = torch.tensor(rng.uniform(0, 1, 40), dtype=torch.float32)
    inst.pred_classes = torch.tensor(rng.integers(0, len(names), 40))
    out = apply_thresholds(inst, t, names)
    table = t.for_class_names(names)
    expected = [i for i in range(40)
                if inst.scores[i].item() >= np.float32(table[inst.pred_classes[i].item()])]
    assert len(out) == len(expected)
    assert torch.equal(out.scores, inst.scores[expected])
    with pytest.raises(ThresholdsError, match="needs the class names"):
        apply_thresholds(inst, t)


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.update(format="other"), "'format' is 'other'; expected 'gn_det.thresholds'"),
    (lambda d: d.update(version=2), "'version' is 2; this gn_det reads version 1"),
    (lambda d: d.update(classes=[]), "'classes' is []; expected an object"),
    (lambda d: d["classes"]["class_1"].update(threshold="high"),
     "classes['class_1'].threshold: is 'high'; expected a finite number, or null"),
    (lambda d: d["classes"]["class_1"].update(threshold=float("nan")),
     "classes['class_1'].threshold: is nan"),
    (lambda d: d["classes"]["class_1"].pop("category_id"),
     "classes['class_1'].category_id: is None; expected an integer"),
])
def test_bad_files_are_one_line_naming_file_and_field(tmp_path, mutate, words):
    data = {"format": FORMAT, "version": 1, "rule": "best_f1",
            "classes": {"class_1": {"category_id": 1, "threshold": 0.5},
                        "class_2": {"category_id": 2, "threshold": None}}}
    mutate(data)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ThresholdsError) as info:
        read_thresholds(path)
    message = str(info.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_missing_file_and_missing_class(tmp_path):
    with pytest.raises(ThresholdsError, match="nope.json: no such thresholds file"):
        read_thresholds(tmp_path / "nope.json")
    t = Thresholds({"a": 0.5}, {1: 0.5}, source="t.json")
    with pytest.raises(ThresholdsError, match="t.json: 'classes' has no entry for 'b'"):
        t.for_class_names(["a", "b"])
    with pytest.raises(ThresholdsError, match="t.json: 'classes' has no category_id 7"):
        t.keep([0.9], [7])


def test_results_thresholded_by_class_name_with_absent_classes_kept(ev):
    """threshold_results (evaluate.py / show_errors --thresholds) matches the file to the ground
    truth by name, whatever its category ids: classes the file lacks keep every detection, a
    class the ground truth lacks is one line."""
    names = dict(enumerate(ev.class_names, start=1))
    t = parse_thresholds({"format": FORMAT, "version": 1, "classes": {
        names[1]: {"category_id": 70, "threshold": 0.5},
        names[2]: {"category_id": 71, "threshold": None}}}, "t.json")
    assert t.table(list(names.values())).tolist() == [0.5, np.inf, -np.inf, -np.inf]
    dets = [{"image_id": 1, "category_id": c, "bbox": [0, 0, 1, 1], "score": s}
            for c in (1, 2, 3) for s in (0.1, 0.5, 0.9)]
    kept = threshold_results(dets, t, names)
    assert [(d["category_id"], d["score"]) for d in kept] == [(1, 0.5), (1, 0.9), (3, 0.1),
                                                              (3, 0.5), (3, 0.9)]
    other = parse_thresholds({"format": FORMAT, "version": 1,
                              "classes": {"RBC": {"category_id": 1, "threshold": 0.5}}}, "t.json")
    with pytest.raises(ThresholdsError, match=r"^t\.json: classes\['RBC'\]: the ground truth has "
                                              r"no class 'RBC'; its classes are "):
        threshold_results(dets, other, names)
