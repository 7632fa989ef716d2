"""gn_det.data.validate: every bad COCO input ends in one DatasetError line naming the field;
degenerate boxes are dropped, outside boxes clipped, both counted; fuzzed JSON raises nothing
else."""
import copy
import json
import math
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gn_det.cli import run_cli
from gn_det.data import DatasetError, validate_coco_dict, validate_coco_file
from gn_det.commands.check_data import main as data_main


def coco(**overrides):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 2, "file_name": "b.jpg", "width": 50, "height": 50}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                         "area": 400, "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 5.5, 5],
                         "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    data.update(overrides)
    return data


def error_of(data, source="x.json") -> str:
    with pytest.raises(DatasetError) as info:
        validate_coco_dict(data, source)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{source}: ")
    return message


def with_ann(**fields):
    data = coco()
    data["annotations"][0].update(fields)
    return data


def test_valid_dataset_passes_unchanged():
    data = coco()
    original = copy.deepcopy(data)
    result = validate_coco_dict(data, "x.json")
    assert data == original  # the input is not modified
    assert [a["id"] for a in result.data["annotations"]] == [1, 2]
    # The one missing 'area' is filled (COCOeval needs it); nothing else changes.
    assert dict(result.counts) == {"area": 1}
    assert result.data["annotations"][1]["area"] == pytest.approx(27.5)


@pytest.mark.parametrize("raw, expected", [
    (b"", "file is empty"),
    (b"   \n", "file is empty"),
    (b"not json at all", "not valid JSON at line 1 column 1"),
    (b'{"images": [{"id": 1', "truncated at line 1"),
    (b"[1, 2, 3]", "top level: is a JSON array; expected a JSON object with 'images'"),
    (b'"hello"', "top level: is a JSON string"),
    (b"\xff\xfe\x00garbage", "x.json: "),
    (b"[" * 100000, "x.json: "),  # nesting deeper than the parser's recursion limit
    (b'{"a": ' + b"9" * 5000 + b"}", "not usable JSON (ValueError"),  # > 4300 digits
])
def test_unparseable_json(tmp_path, raw, expected):
    path = tmp_path / "x.json"
    path.write_bytes(raw)
    with pytest.raises(DatasetError) as info:
        validate_coco_file(str(path))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"x\.json: annotation file not found"):
        validate_coco_file(str(tmp_path / "x.json"))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_or_mistyped_top_level_lists(key):
    data = coco()
    del data[key]
    assert f"x.json: {key}: is missing; expected a list of {key}" in error_of(data)
    assert f"{key}: is a JSON object; expected a list" in error_of(coco(**{key: {}}))


@pytest.mark.parametrize("data, expected", [
    (coco(images=[]), "images: is empty; expected at least one entry"),
    (coco(categories=[]), "categories: is empty"),
    (coco(images=[5]), "images[0]: is 5; expected a JSON object"),
    (coco(annotations=[None]), "annotations[0]: is null; expected a JSON object"),
    (coco(categories=[{"id": "1", "name": "cat"}]),
     "categories[0].id: is '1'; expected an integer id"),
    (coco(categories=[{"id": 1}]), "categories[0].name: is missing; expected a non-empty"),
    (coco(categories=[{"id": 1, "name": 7}]), "categories[0].name: is 7"),
    (coco(images=[{"id": 1, "file_name": "a.jpg", "width": 0, "height": 8}]),
     "images[0].width: is 0; expected a positive integer"),
    (coco(images=[{"id": 1, "file_name": "a.jpg", "width": 8}]),
     "images[0].height: is missing; expected a positive integer"),
    (coco(images=[{"id": 1.0, "file_name": "a.jpg", "width": 8, "height": 8}]),
     "images[0].id: is 1.0; expected an integer id"),
    (coco(images=[{"id": True, "file_name": "a.jpg", "width": 8, "height": 8}]),
     "images[0].id: is true; expected an integer id"),
    (coco(images=[{"id": 1, "file_name": "", "width": 8, "height": 8}]),
     "images[0].file_name: is ''; expected the image's path"),
    (with_ann(bbox="10,10,20,20"), "annotations[0].bbox: is '10,10,20,20'; expected [x, y,"),
    (with_ann(bbox=[1, 2, 3]), "annotations[0].bbox: has 3 values; expected [x, y, width, "),
    (with_ann(bbox=[1, 2, None, 3]), "annotations[0].bbox: is [1, 2, null, 3]"),
    (with_ann(iscrowd=2), "annotations[0].iscrowd: is 2; expected 0 or 1"),
    (with_ann(ignore=1), "annotations[0].ignore: is 1; expected 0 or absent"),
    (with_ann(area=-1), "annotations[0].area: is -1; expected a finite number >= 0"),
    (with_ann(area="big"), "annotations[0].area: is 'big'"),
    (with_ann(segmentation=[[1, 2, "x", 4, 5, 6]]),
     "annotations[0].segmentation[0]: is an array of 6 items; expected a polygon"),
    (with_ann(segmentation=[[1, 2, float("nan"), 4, 5, 6]]),
     "annotations[0].segmentation[0]: has NaN/inf coordinates"),
    (with_ann(segmentation={"size": [10], "counts": "abc"}),
     "annotations[0].segmentation.size: is [10]; expected [height, width]"),
    (with_ann(segmentation={"size": [10, 10], "counts": 5}),
     "annotations[0].segmentation.counts: is 5; expected an RLE string"),
    (with_ann(segmentation="poly"), "annotations[0].segmentation: is 'poly'; expected a list"),
    (with_ann(keypoints=[1, 2]), "annotations[0].keypoints: has 2 values; expected finite"),
])
def test_wrong_field_types(data, expected):
    assert expected in error_of(data)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_duplicate_ids(key):
    data = coco()
    data[key][1]["id"] = data[key][0]["id"]
    assert f"{key}[1].id: duplicates {key}[0].id = 1; expected ids unique within '{key}'" \
        in error_of(data)


def test_annotations_must_name_declared_images_and_categories():
    assert ("annotations[0].image_id: 9 is not an id in 'images'; expected the id of a "
            "declared image") in error_of(with_ann(image_id=9))
    assert ("annotations[0].category_id: 7 is not an id in 'categories'; expected one of the "
            "declared category ids (1, 2)") in error_of(with_ann(category_id=7))
    assert "annotations[0].bbox: is missing" in error_of(
        coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1}]))


def test_degenerate_boxes_dropped_and_outside_boxes_clipped():
    boxes = {
        1: [10, 10, 20, 20],                  # fine
        2: [float("nan"), 0, 5, 5],           # NaN
        3: [0, 0, float("inf"), 5],           # inf
        4: [0, 0, 10 ** 400, 5],              # huge integer: inf, not OverflowError
        5: [10, 10, 0, 5],                    # zero width
        6: [10, 10, 5, -3],                   # negative height
        7: [200, 10, 5, 5],                   # entirely right of the 100 px wide image
        8: [-10, 70, 30, 20],                 # sticks out left and bottom: clipped
    }
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in boxes.items()]
    result = validate_coco_dict(coco(annotations=anns), "x.json")
    kept = {a["id"]: a["bbox"] for a in result.data["annotations"]}
    assert kept == {1: [10, 10, 20, 20], 8: [0.0, 70, 20, 10]}
    assert result.counts["non-finite"] == 3 and result.counts["non-positive"] == 2
    assert result.counts["outside"] == 1 and result.counts["clipped"] == 1
    assert result.data["annotations"][1]["area"] == 200  # filled from the clipped box
    summary = result.summary()
    assert "\n" not in summary and summary.startswith("x.json: of 8 annotations, ")
    assert "dropped 3 annotations with a NaN/inf bbox (annotations[1].bbox, " in summary
    assert "clipped 1 bbox to the image (annotations[7].bbox)" in summary


def test_nan_literals_in_a_file(tmp_path):
    text = json.dumps(coco()).replace("[10, 10, 20, 20]", "[NaN, 10, Infinity, 20]")
    (tmp_path / "x.json").write_text(text)
    result, raw = validate_coco_file(str(tmp_path / "x.json"))
    assert result.counts["non-finite"] == 1 and raw == text.encode()


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys, monkeypatch):
    (tmp_path / "x.json").write_text("[]")
    monkeypatch.setattr(sys, "argv", ["gn_det.data", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit) as info:
        run_cli(data_main, "check_data")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"check_data: error: {tmp_path / 'x.json'}: top level: is "
                          "a JSON array") and err.count("\n") == 1
    (tmp_path / "y.json").write_text(json.dumps(with_ann(bbox=[0, 0, 0, 1])))
    data_main([str(tmp_path / "y.json")])
    out = capsys.readouterr().out
    assert "2 images, 1 annotation kept, 2 categories (image files not checked" in out
    assert "warning: " in out and "zero or negative bbox width/height (annotations[0].bbox)" in out


# ------------------------------------------------------------------------------ fuzzing

_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=8)
            | st.floats(allow_nan=True, allow_infinity=True))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=5), max_leaves=25)


_ids = st.integers(1, 3)
_number = (st.integers(-5, 120) | st.floats(-5, 120)
           | st.sampled_from([math.nan, math.inf, -math.inf, 10 ** 400]))
_image = st.fixed_dictionaries({"id": _ids, "file_name": st.just("a.jpg"),
                                "width": st.integers(1, 100), "height": st.integers(1, 100)})
_category = st.fixed_dictionaries({"id": _ids, "name": st.sampled_from(["a", "b"])})
_annotation = st.fixed_dictionaries(
    {"id": st.integers(1, 6), "image_id": _ids, "category_id": _ids,
     "bbox": st.lists(_number, min_size=4, max_size=4)},
    optional={"area": _number, "iscrowd": st.sampled_from([0, 1]),
              "segmentation": st.lists(st.lists(_number, max_size=8), max_size=2),
              "keypoints": st.lists(_number, max_size=6)})
_coco_like = st.fixed_dictionaries(
    {"images": st.lists(_image, min_size=1, max_size=3, unique_by=lambda d: d["id"]),
     "annotations": st.lists(_annotation, max_size=5, unique_by=lambda d: d["id"]),
     "categories": st.lists(_category, min_size=1, max_size=3, unique_by=lambda d: d["id"])})


@st.composite
def _mutated_coco(draw):
    """A near-valid COCO document with 0-2 random spots replaced by arbitrary JSON or deleted:
    it gets past the shallow checks often enough to fuzz the deep ones."""
    doc = draw(_coco_like)
    for _ in range(draw(st.integers(0, 2))):
        parent, key = None, None
        node = doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            parent, key = node, draw(st.sampled_from(keys))
            node = node[key]
        if parent is None:
            continue
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[key]
        else:
            parent[key] = draw(_json)
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(_mutated_coco(), _json))
def test_fuzz_only_dataset_error_escapes(data):
    try:
        result = validate_coco_dict(data, "fuzz.json")
    except DatasetError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.json: ")
        return
    for ann in result.data["annotations"]:  # what passes is usable by detectron2
        x, y, w, h = ann["bbox"]
        assert all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0
        assert math.isfinite(ann["area"])


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=64) | _json.map(lambda d: json.dumps(d).encode()[:-1]))
def test_fuzz_raw_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "f.json"
    path.write_bytes(raw)
    try:
        validate_coco_file(str(path))
    except DatasetError as e:
        assert "\n" not in str(e)
