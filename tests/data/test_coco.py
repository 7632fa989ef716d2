"""gn_det.data.coco: datasets registered from the config (CLI opts and YAML), validated first
(every image decoded: a cut photo refused, JPEGs without end marker counted), idempotently, with
cleaned boxes reaching both training (DatasetCatalog) and evaluation (metadata json_file)."""
import json
import logging
import uuid
from pathlib import Path

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from gn_det.commands import make_shapes
from gn_det.config import add_gn_det_config
from gn_det.datasets.shapes import generate
from gn_det.data import DatasetError, register_coco_dataset, register_datasets_from_cfg
from gn_det.data import coco as coco_module

from cli_harness import REAL_PHOTO, cut_jpeg, jpeg_without_eoi, shared_data

from helpers import REPO

ROOT = REPO


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A tiny generated shapes dataset: {"train": (json, root), "val": (json, root)}."""
    out = tmp_path_factory.mktemp("shapes")
    generate(make_shapes.parse_args(
        ["--out", str(out), "--train", "4", "--val", "2", "--size", "96", "--quiet"]))
    return {s: (str(out / "annotations" / f"{s}.json"), str(out / s)) for s in ("train", "val")}


@pytest.fixture
def names():
    """Unique dataset names, unregistered again after the test."""
    made = []

    def new(prefix="t"):
        made.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield new
    for name in made:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        coco_module._REGISTERED.pop(name, None)


@pytest.fixture
def cfg(tmp_path):
    cfg = add_gn_det_config(get_cfg())
    cfg.OUTPUT_DIR = str(tmp_path / "output")
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    return cfg


def test_register_from_cli_opts_and_train_with_detectron2s_mapper(cfg, shapes, names):
    train, val = names("shapes_train"), names("shapes_val")
    cfg.merge_from_list([
        "DATASETS.COCO_FORMAT", repr([[train, *shapes["train"]], [val, *shapes["val"]]]),
        "DATASETS.TRAIN", repr((train,)), "DATASETS.TEST", repr((val,))])
    assert register_datasets_from_cfg(cfg) == [train, val]

    meta = MetadataCatalog.get(train)
    assert meta.thing_classes == ["circle", "square", "triangle", "star"]
    assert meta.evaluator_type == "coco"
    assert meta.json_file == str(Path(shapes["train"][0]).resolve())  # clean: no copy
    assert meta.image_root == str(Path(shapes["train"][1]).resolve())
    dicts = DatasetCatalog.get(train)
    assert len(dicts) == 4 and all(d["annotations"] for d in dicts)
    cfg.MODEL.MASK_ON = True
    out = DatasetMapper(cfg, is_train=True)(dicts[0])
    instances = out["instances"]
    assert out["image"].shape[0] == 3 and out["image"].dtype == torch.uint8
    assert len(instances) == len(dicts[0]["annotations"])
    assert instances.gt_boxes.area().min() > 0 and instances.gt_masks.polygons
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}


def test_register_from_yaml(cfg, shapes, names, tmp_path):
    name = names("yaml")
    json_file, root = shapes["val"]
    (tmp_path / "c.yaml").write_text(
        f"DATASETS:\n  COCO_FORMAT:\n    - [{name}, {json_file}, {root}]\n"
        f"  TRAIN: [{name}]\n")
    cfg.merge_from_file(str(tmp_path / "c.yaml"))
    assert register_datasets_from_cfg(cfg) == [name]
    assert len(DatasetCatalog.get(name)) == 2


def test_idempotent_and_name_clashes(cfg, shapes, names):
    name = names()
    cache = cfg.OUTPUT_DIR
    assert register_coco_dataset(name, *shapes["train"], cache) is True
    assert register_coco_dataset(name, *shapes["train"], cache) is False  # same files: no-op
    with pytest.raises(DatasetError) as info:
        register_coco_dataset(name, *shapes["val"], cache)
    assert str(info.value).startswith(f"dataset name {name!r} is already registered with "
                                      f"json_file {str(Path(shapes['train'][0]).resolve())!r}")
    with pytest.raises(DatasetError, match="'coco_2017_val' is already registered"):
        register_coco_dataset("coco_2017_val", *shapes["val"], cache)


def _dirty_copy(shapes, tmp_path):
    """The val split with a NaN box, a zero-size box, a box off the image and one clipped."""
    json_file, root = shapes["val"]
    data = json.loads(Path(json_file).read_text())
    base = dict(data["annotations"][0])
    extra = {"NaN": [float("nan"), 1, 5, 5], "zero": [1, 1, 0, 5],
             "outside": [500, 1, 5, 5], "clip": [90, 90, 20, 20]}
    for k, box in enumerate(extra.values()):
        ann = dict(base, id=1000 + k, bbox=box)
        ann.pop("segmentation")
        ann.pop("area")
        data["annotations"].append(ann)
    path = tmp_path / "dirty.json"
    path.write_text(json.dumps(data))
    return str(path), root, len(data["annotations"])


def test_degenerate_boxes_dropped_for_training_and_evaluation(cfg, shapes, names, tmp_path,
                                                              caplog):
    name = names("dirty")
    json_file, root, total = _dirty_copy(shapes, tmp_path)
    cfg.DATASETS.COCO_FORMAT = [[name, json_file, root]]
    with caplog.at_level(logging.WARNING, logger="gn_det.data.coco"):
        register_datasets_from_cfg(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.name == "gn_det.data.coco"]
    assert len(warnings) == 1  # ONE warning with the counts
    assert (f"of {total} annotations, dropped 1 annotation with a NaN/inf bbox" in warnings[0]
            and "dropped 1 annotation with a zero or negative" in warnings[0]
            and "dropped 1 annotation whose bbox lies entirely outside" in warnings[0]
            and "clipped 1 bbox to the image" in warnings[0])

    meta = MetadataCatalog.get(name)
    assert meta.source_json_file == json_file
    assert Path(meta.json_file).parent == Path(cfg.OUTPUT_DIR).resolve() / "dataset_cache"
    dicts = DatasetCatalog.get(name)
    boxes = [a["bbox"] for d in dicts for a in d["annotations"]]
    assert len(boxes) == total - 3
    assert [90, 90, 6, 6] in boxes  # clipped to the 96 px image
    # The evaluator reads json_file itself: it sees the same cleaned ground truth, with areas.
    gt = COCO(meta.json_file)
    assert len(gt.anns) == total - 3 and all("area" in a for a in gt.anns.values())
    # Registering again (another process, another run) reuses the cached copy.
    coco_module._REGISTERED.pop(name)
    register_datasets_from_cfg(cfg)
    assert len(list(Path(meta.json_file).parent.glob(f"{name}-*.json"))) == 1


def test_errors_before_training_starts(cfg, shapes, names, tmp_path):
    name = names()
    json_file, root = shapes["val"]
    cfg.DATASETS.COCO_FORMAT = [[name, json_file, root]]
    cfg.DATASETS.TRAIN = ("shapes_trian",)
    with pytest.raises(DatasetError, match=r"^DATASETS.TRAIN\[0\]: dataset 'shapes_trian' is not "
                                           rf"registered \(from DATASETS.COCO_FORMAT: {name}\)"):
        register_datasets_from_cfg(cfg)

    cfg.DATASETS.COCO_FORMAT = [[name, json_file]]
    with pytest.raises(DatasetError, match=r"^DATASETS.COCO_FORMAT\[0\] is \[.*\]; expected "
                                           r"\[name, annotation_json, image_root\]"):
        register_datasets_from_cfg(cfg)

    cfg.DATASETS.COCO_FORMAT = [[name, str(tmp_path / "no.json"), root]]
    with pytest.raises(DatasetError, match=r"no\.json: annotation file not found"):
        register_datasets_from_cfg(cfg)

    other = names()
    cfg.DATASETS.COCO_FORMAT = [[other, json_file, str(tmp_path)]]  # wrong image root
    with pytest.raises(DatasetError, match=r"2 missing of 2 image files under"):
        register_datasets_from_cfg(cfg)
    assert other not in DatasetCatalog.list()  # a dataset that fails is not registered
    cfg.DATASETS.CHECK_IMAGES = False
    cfg.DATASETS.TRAIN = (other,)
    assert register_datasets_from_cfg(cfg) == [other]


def test_builtin_dataset_with_missing_files(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # builtins live under $DETECTRON2_DATASETS, default ./datasets
    cfg.DATASETS.TEST = ("coco_2017_val",)
    with pytest.raises(DatasetError, match=r"DATASETS.TEST\[0\]: detectron2 builtin dataset "
                                           r"'coco_2017_val' expects its json_file at .* "
                                           r"does not exist; .*DETECTRON2_DATASETS"):
        register_datasets_from_cfg(cfg)


def _photo_dataset(tmp_path, kinds):
    """A COCO json + image root of copies of a real photo: 'ok', 'cut' (to two thirds) or
    'no_eoi' (end marker stripped, still decodes), one box each."""
    photo = shared_data(REAL_PHOTO)
    with Image.open(photo) as im:
        w, h = im.size
    make = {"ok": lambda p: p.write_bytes(photo.read_bytes()), "cut": cut_jpeg,
            "no_eoi": jpeg_without_eoi}
    root = tmp_path / "photos"
    root.mkdir()
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "raccoon"}]}
    for i, kind in enumerate(kinds, start=1):
        make[kind](root / f"{kind}_{i}.jpg")
        data["images"].append({"id": i, "file_name": f"{kind}_{i}.jpg", "width": w, "height": h})
        data["annotations"].append({"id": i, "image_id": i, "category_id": 1,
                                    "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0})
    (tmp_path / "photos.json").write_text(json.dumps(data))
    return str(tmp_path / "photos.json"), str(root)


def test_registration_refuses_a_cut_photo_naming_file_and_dataset(cfg, names, tmp_path):
    name = names("photos")
    json_file, root = _photo_dataset(tmp_path, ["ok", "cut"])
    cfg.DATASETS.COCO_FORMAT = [[name, json_file, root]]
    with pytest.raises(DatasetError) as info:
        register_datasets_from_cfg(cfg)
    assert str(info.value).startswith(
        f"{json_file} (dataset {name!r}): 1 unusable of 2 image files under {root}: images[1] "
        "'cut_2.jpg' cannot be decoded (OSError: image file is truncated (")
    assert name not in DatasetCatalog.list()
    # The verdicts are kept in the dataset cache; with the check off, registration passes.
    assert list((Path(cfg.OUTPUT_DIR) / "dataset_cache").glob("image_checks-*.json"))
    cfg.DATASETS.CHECK_IMAGES = False
    assert register_datasets_from_cfg(cfg) == [name]


def test_registration_counts_jpegs_without_end_marker_in_one_warning(cfg, names, tmp_path,
                                                                      caplog):
    name = names("photos")
    json_file, root = _photo_dataset(tmp_path, ["no_eoi", "ok", "no_eoi"])
    cfg.DATASETS.COCO_FORMAT = [[name, json_file, root]]
    cfg.DATASETS.CACHE_DIR = str(tmp_path / "my_cache")
    with caplog.at_level(logging.WARNING, logger="gn_det.data.coco"):
        register_datasets_from_cfg(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.name == "gn_det.data.coco"]
    assert warnings == [f"{json_file} (dataset {name!r}): 2 of 3 JPEG files under {root} do not "
                        "end with the JPEG end marker FF D9 but decode (first 2: 'no_eoi_1.jpg', "
                        "'no_eoi_3.jpg'); they may be cut short: check their bottom rows"]
    assert list((tmp_path / "my_cache").glob("image_checks-*.json"))
