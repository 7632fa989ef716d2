"""gn_det.evaluation.results: one clear error per bad entry; ground-truth normalization."""
import json
import logging
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gn_det.evaluation.results import (EvaluationInputError, GroundTruthError, ResultsError,
                                       category_names, load_ground_truth, load_results,
                                       results_to_coco)


def gt_dict():
    return {"images": [{"id": i, "height": 100, "width": 100, "file_name": f"{i}.jpg"}
                       for i in (1, 2, 3)],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                             "area": 100, "iscrowd": 0}]}


def det(**kw):
    return dict({"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}, **kw)


@pytest.mark.parametrize("bad, field, words", [
    (det(image_id=99), "image_id", "not an image of the ground truth (valid: 1..3)"),
    (det(category_id=5), "category_id", "not a category of the ground truth (valid: 1..2)"),
    (det(bbox=[0, 0, 10]), "bbox", "expected 4 finite numbers"),
    (det(bbox=[0, 0, -1, 10]), "bbox", "width and height must be >= 0"),
    (det(bbox=[0, 0, float("nan"), 10]), "bbox", "expected 4 finite numbers"),
    (det(score=float("inf")), "score", "expected a finite number"),
    (det(score=-0.5), "score", "is -0.5; expected a finite number >= 0"),
    (det(bbox=[0, float("inf"), 10, 10]), "bbox", "expected 4 finite numbers"),
    (det(score="0.9"), "score", "expected a finite number"),
    (det(score=True), "score", "expected a finite number"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, "score", "is missing"),
    (det(image_id=[1]), "image_id", "not an image"),
])
def test_bad_entry_names_file_index_field_and_what_is_valid(bad, field, words, tmp_path):
    path = tmp_path / "res.json"
    path.write_text(json.dumps([det(), det(), bad], allow_nan=True))
    with pytest.raises(ResultsError) as e:
        load_results(path, load_ground_truth(gt_dict()))
    assert (e.value.index, e.value.field) == (2, field)
    assert str(e.value).startswith(f"{path}: entry 2: '{field}': ")
    assert words in str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON (line 1"),
    (json.dumps({"a": 1}), "expected a JSON list of detections"),
    (json.dumps(gt_dict()), "looks like a ground-truth file"),
    (json.dumps([1]), "entry 0: is a int"),
])
def test_bad_results_file(content, words, tmp_path):
    path = tmp_path / "res.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match="res.json") as e:
        load_results(path, load_ground_truth(gt_dict()))
    assert words in str(e.value)


def test_missing_results_file_and_empty_results(tmp_path, caplog):
    coco = load_ground_truth(gt_dict())
    with pytest.raises(ResultsError, match="no such results file"):
        load_results(tmp_path / "nope.json", coco)
    with caplog.at_level(logging.WARNING):
        assert load_results([], coco) == []
    assert "no detections" in caplog.text
    assert len(results_to_coco(coco, []).anns) == 0


def test_results_are_copied_and_normalized():
    coco = load_ground_truth(gt_dict())
    raw = [det(bbox=[1, 2, 3, 4], score=1)]
    out = load_results(raw, coco)
    assert out[0]["bbox"] == [1.0, 2.0, 3.0, 4.0] and out[0]["score"] == 1.0
    results_to_coco(coco, out)
    assert "id" not in raw[0]  # the caller's list is untouched: load_results copied it
    assert out[0]["id"] == 1 and out[0]["area"] == 12.0  # numbered as COCO.loadRes does


@pytest.mark.parametrize("mutate, words", [
    (lambda g: g.pop("annotations"), "missing list 'annotations'"),
    (lambda g: g["annotations"][0].update(image_id=9), "annotations: entry 0: 'image_id'"),
    (lambda g: g["annotations"][0].update(category_id=9), "'category_id': is 9, not an id"),
    (lambda g: g["annotations"][0].update(bbox=[0, 0]), "'bbox'"),
    (lambda g: g["images"].append({"id": 1}), "image id 1 appears twice"),
    (lambda g: g.update(categories=[]), "'categories' is empty"),
])
def test_bad_ground_truth(mutate, words):
    g = gt_dict()
    mutate(g)
    with pytest.raises(GroundTruthError) as e:
        load_ground_truth(g)
    assert words in str(e.value) and isinstance(e.value, EvaluationInputError)


def test_ground_truth_fills_what_pycocotools_needs(caplog):
    g = gt_dict()
    g["annotations"] = [{"id": 0, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 5]},
                        {"id": 0, "image_id": 2, "category_id": 2, "bbox": [0, 0, 2, 2]}]
    with caplog.at_level(logging.WARNING):
        coco = load_ground_truth(g)
    assert "renumbering" in caplog.text
    assert sorted(coco.anns) == [1, 2]
    assert coco.anns[1]["area"] == 20.0 and coco.anns[1]["iscrowd"] == 0


def test_category_names_are_unique():
    g = gt_dict()
    g["categories"].append({"id": 3, "name": "cat"})
    assert category_names(load_ground_truth(g)) == {1: "cat (id 1)", 2: "dog", 3: "cat (id 3)"}


# ------------------------------------------------------------------------------ fuzzing

_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=6)
            | st.floats(allow_nan=True, allow_infinity=True))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
_number = st.integers(-5, 120) | st.floats(allow_nan=True, allow_infinity=True)
_detection = st.fixed_dictionaries(
    {}, optional={"image_id": st.integers(0, 4) | _scalars,
                  "category_id": st.integers(0, 3) | _scalars,
                  "bbox": st.lists(_number, min_size=3, max_size=5) | _json,
                  "score": _number | _scalars})


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_detection, max_size=4) | _json.filter(lambda d: not isinstance(d, str)))
def test_fuzz_only_results_error_escapes(data):  # (a str source is a path: fuzzed below)
    coco = load_ground_truth(gt_dict())
    try:
        out = load_results(data, coco, name="fuzz.json")
    except ResultsError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.json")
        return
    for d in out:  # what passes is what COCOeval can use
        assert d["image_id"] in coco.imgs and d["category_id"] in coco.cats
        assert all(math.isfinite(v) for v in d["bbox"]) and min(d["bbox"][2:]) >= 0
        assert math.isfinite(d["score"]) and d["score"] >= 0
    results_to_coco(coco, out)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=64) | _json.map(lambda d: json.dumps(d).encode()[:-1]))
def test_fuzz_raw_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "res.json"
    path.write_bytes(raw)
    try:
        load_results(path, load_ground_truth(gt_dict()))
    except ResultsError as e:
        assert "\n" not in str(e)
