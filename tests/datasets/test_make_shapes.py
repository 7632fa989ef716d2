"""The make_shapes command (gn_det.commands.make_shapes over gn_det.datasets.shapes):
deterministic by seed, sane COCO boxes and polygons that match the drawn shapes, option checks,
and no writes outside --out."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from gn_det.commands import make_shapes
from gn_det.data import validate_coco_dict
from gn_det.datasets import shapes

from helpers import REPO

ROOT = REPO
SCRIPT = ROOT / "datasets" / "make_shapes.py"

SMALL = ["--train", "6", "--val", "3", "--size", "96", "--quiet"]


def generate(out, *extra):
    opts = make_shapes.parse_args(["--out", str(out), *SMALL, *extra])
    shapes.generate(opts)
    return Path(out)


def files_of(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("shapes"))


def test_layout_and_valid_coco(dataset):
    files = files_of(dataset)
    assert {"annotations/train.json", "annotations/val.json"} <= set(files)
    assert sorted(f for f in files if f.startswith("train/"))[:2] == [
        "train/train_000000.jpg", "train/train_000001.jpg"]
    assert len([f for f in files if f.startswith("val/")]) == 3
    for split, count in (("train", 6), ("val", 3)):
        data = json.loads(files[f"annotations/{split}.json"])
        assert [c["name"] for c in data["categories"]] == ["circle", "square", "triangle", "star"]
        assert len(data["images"]) == count and len(data["annotations"]) >= count
        cleaned = validate_coco_dict(data, split)
        assert not cleaned.changed  # nothing for the validator to drop, clip or fill
        assert all(a["iscrowd"] == 0 for a in data["annotations"])


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    assert files_of(generate(tmp_path / "again")) == files_of(dataset)
    other = files_of(generate(tmp_path / "seed1", "--seed", "1"))
    mine = files_of(dataset)
    assert other.keys() == mine.keys()
    assert all(other[k] != mine[k] for k in mine if k.endswith(".jpg"))
    assert other["annotations/train.json"] != mine["annotations/train.json"]


def test_val_split_does_not_depend_on_the_train_count(dataset, tmp_path):
    more = files_of(generate(tmp_path / "more", "--train", "2"))
    mine = files_of(dataset)
    assert {k: v for k, v in more.items() if k.startswith("val/")} == \
        {k: v for k, v in mine.items() if k.startswith("val/")}


def test_boxes_and_polygons_match_the_drawn_shapes(dataset):
    data = json.loads((dataset / "annotations" / "train.json").read_text())
    images = {img["id"]: img for img in data["images"]}
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
        assert w >= 4 and h >= 4
        rles = mask_util.frPyObjects(ann["segmentation"], img["height"], img["width"])
        mask = mask_util.decode(mask_util.merge(rles)).astype(bool)
        ys, xs = np.nonzero(mask)
        # The polygon's extent is the box: polygons run through boundary pixel centres, so thin
        # tips (star, triangle) may lose a pixel or two.
        assert abs(xs.min() - x) <= 2 and abs(xs.max() + 1 - (x + w)) <= 2
        assert abs(ys.min() - y) <= 2 and abs(ys.max() + 1 - (y + h)) <= 2
        assert abs(mask.sum() - ann["area"]) <= 0.25 * ann["area"]
        # Inside the mask is one flat colour plus noise: a drawn shape, not background.
        pixels = np.asarray(Image.open(dataset / "train" / img["file_name"]), np.float32)
        inner = mask & ~np.roll(mask, 2, 0) & ~np.roll(mask, -2, 0) \
            & ~np.roll(mask, 2, 1) & ~np.roll(mask, -2, 1)
        if inner.sum() > 20:
            assert pixels[inner].std(axis=0).max() < 20


def test_size_and_object_options(tmp_path):
    out = generate(tmp_path / "o", "--min-objects", "3", "--max-objects", "3",
                   "--max-occlusion", "0", "--classes", "hexagon,cross", "--format", "png")
    data = json.loads((out / "annotations" / "train.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["hexagon", "cross"]
    assert (out / "train" / "train_000000.png").is_file()
    per_image = np.bincount([a["image_id"] for a in data["annotations"]])[1:]
    assert per_image.max() == 3  # no overlap allowed can only ever skip objects
    assert data["info"]["options"]["max_occlusion"] == 0


@pytest.mark.parametrize("args, message", [
    (["--classes", "circle,blob"], "--classes 'circle,blob': expected distinct names from circle"),
    (["--classes", "circle,circle"], "--classes 'circle,circle': expected distinct names"),
    (["--min-size", "0.5", "--max-size", "0.2"], "--min-size 0.5: expected 0 < --min-size <="),
    (["--size", "8"], "--size 8: expected 32..4096 pixels"),
    (["--max-occlusion", "1"], "--max-occlusion 1.0: expected 0 <= value < 1"),
    (["--train", "-1"], "--train -1: expected a count >= 0"),
])
def test_bad_options(args, message):
    with pytest.raises(shapes.ShapesError) as info:
        make_shapes.parse_args(args)
    assert str(info.value).startswith(message)


def test_never_writes_outside_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "train").symlink_to(elsewhere)  # a planted link must not redirect the writes
    with pytest.raises(shapes.ShapesError, match="outside the output folder"):
        generate(out)
    assert not any(elsewhere.iterdir())
    with pytest.raises(shapes.ShapesError, match=r"refusing to write '\.\./x'"):
        shapes.safe_path(out.resolve(), "../x")


def test_cli(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "c"), "--train",
                          "2", "--val", "1", "--size", "64"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("wrote 3 images (2 train, 1 val, 4 classes) in ")
    assert "shapes: 3/3 img, done in " in run.stderr  # progress (with an ETA while running)
    (tmp_path / "file").write_text("")
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "file")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr == f"make_shapes: error: --out {tmp_path / 'file'}: is a file; expected " \
                         "a folder (created if absent)\n"
