"""Real photographs end to end: a handful of images of each shared dataset (raccoon, BCCD with its
own split lists), read from ../shared/data at test time, go through datasets/voc_to_coco.py,
`gn-det-check-data` (every image decoded), registration from DATASETS.COCO_FORMAT and a
2-iteration train_net run (GN everywhere) with evaluation, at 96 px."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detectron2.data.datasets.pascal_voc import load_voc_instances
from detectron2.structures import BoxMode

from gn_det.commands import voc_to_coco
from gn_det.utils.text import plural

from cli_harness import SHARED_DATA, TINY_MODEL_OPTS, TOY_CONFIG, run_cli, shared_data

pytestmark = pytest.mark.slow  # converts and trains on real photographs


N_TRAIN, N_VAL = 4, 2


def _bccd_split(split: str, n: int):
    return (SHARED_DATA / "bccd/ImageSets/Main" / f"{split}.txt").read_text().split()[:n]


# name -> (XML folder, image folder, classes, train stems, val stems); raccoon ships no split
# (the first images in name order); BCCD uses the head of its own train / val lists.
DATASETS = {
    "raccoon": ("raccoon/annotations", "raccoon/images", ["raccoon"],
                lambda: ["raccoon-1", "raccoon-10", "raccoon-100", "raccoon-101"],
                lambda: ["raccoon-102", "raccoon-103"]),
    "bccd": ("bccd/Annotations", "bccd/JPEGImages", ["Platelets", "RBC", "WBC"],
             lambda: _bccd_split("train", N_TRAIN), lambda: _bccd_split("val", N_VAL)),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{name: {"train"/"val": annotation json, "images": image folder, "classes": names}}, the
    handful of images converted with voc_to_coco.py --list ... --image-dir ..."""
    shared_data()
    out = tmp_path_factory.mktemp("real")
    result = {}
    for name, (xml_dir, image_dir, classes, train, val) in DATASETS.items():
        entry = {"images": SHARED_DATA / image_dir, "classes": classes}
        for split, stems in (("train", train()), ("val", val())):
            (out / f"{name}_{split}.txt").write_text("\n".join(stems) + "\n")
            entry[split] = out / f"{name}_{split}.json"
            assert voc_to_coco.main(["--xml-dir", str(SHARED_DATA / xml_dir), "--list",
                             str(out / f"{name}_{split}.txt"), "--image-dir",
                             str(SHARED_DATA / image_dir), "--classes", ",".join(classes),
                             "--out", str(entry[split])]) == 0
        result[name] = entry
    return result


def test_bccd_conversion_matches_detectron2s_voc_loader(converted, tmp_path):
    """Same boxes (after clipping to the image) and classes as detectron2's own VOC reader."""
    voc_root = tmp_path / "voc"
    (voc_root / "ImageSets/Main").mkdir(parents=True)
    for folder in ("Annotations", "JPEGImages"):
        (voc_root / folder).symlink_to(SHARED_DATA / "bccd" / folder)
    stems = DATASETS["bccd"][3]()
    (voc_root / "ImageSets/Main/handful.txt").write_text("\n".join(stems))
    d2 = load_voc_instances(str(voc_root), "handful", DATASETS["bccd"][2])
    ours = json.loads(converted["bccd"]["train"].read_text())
    assert [Path(d["file_name"]).name for d in d2] == [i["file_name"] for i in ours["images"]]
    for record, image in zip(d2, ours["images"]):
        assert (record["width"], record["height"]) == (image["width"], image["height"])
        expected = sorted((a["category_id"] + 1, *np.clip(a["bbox"], 0, [image["width"],
                                                                          image["height"]] * 2))
                          for a in record["annotations"])
        got = sorted((a["category_id"], *BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS,
                                                         BoxMode.XYXY_ABS))
                     for a in ours["annotations"] if a["image_id"] == image["id"])
        assert len(got) == len(expected) > 5  # BCCD: dense cells
        np.testing.assert_allclose(np.array(got), np.array(expected), atol=1e-6)


@pytest.mark.parametrize("name", list(DATASETS))
def test_conversion_keeps_every_box_and_the_real_image_sizes(converted, name):
    data = json.loads(converted[name]["train"].read_text())
    xml_dir = SHARED_DATA / DATASETS[name][0]
    n_objects = sum((xml_dir / f"{Path(i['file_name']).stem}.xml").read_text().count("<object>")
                    for i in data["images"])
    assert len(data["images"]) == N_TRAIN and len(data["annotations"]) == n_objects
    for image in data["images"]:
        with Image.open(converted[name]["images"] / image["file_name"]) as im:
            assert im.size == (image["width"], image["height"])


@pytest.mark.parametrize("name", list(DATASETS))
def test_validation_decodes_every_real_image(converted, name, tmp_path):
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        code, out, err = run_cli("data", [str(converted[name][split]),
                                          str(converted[name]["images"]), "--cache-dir",
                                          str(tmp_path / "cache")])
        assert code == 0, err
        classes = plural(len(DATASETS[name][2]), "category")  # raccoon: "1 category"
        assert f"OK: {n} images" in out and f"{classes}, every image decoded" in out
        assert "warning" not in out + err  # real, complete JPEGs: nothing to report
    assert len(list((tmp_path / "cache").glob("image_checks-*.json"))) == 1  # one image root


@pytest.mark.parametrize("name", list(DATASETS))
def test_register_train_two_iterations_and_evaluate(converted, name, tmp_path):
    entry, classes = converted[name], DATASETS[name][2]
    out = tmp_path / "out"
    opts = [*TINY_MODEL_OPTS, *[o for c in ("BACKBONE", "FPN", "RETINANET_HEAD")
                                for o in (f"MODEL.NORMS.{c}.TYPE", "GN")],
            "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
            "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
            "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",  # an untrained model still detects
            "DATASETS.COCO_FORMAT", str([[f"real_{name}_train", str(entry["train"]),
                                          str(entry["images"])],
                                         [f"real_{name}_val", str(entry["val"]),
                                          str(entry["images"])]]),
            "DATASETS.TRAIN", f"('real_{name}_train',)", "DATASETS.TEST", f"('real_{name}_val',)",
            "MODEL.RETINANET.NUM_CLASSES", str(len(classes)),
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "100",
            "OUTPUT_DIR", str(out)]
    code, stdout, err = run_cli("train_net", ["--config-file", TOY_CONFIG, *opts])
    assert code == 0, err[-3000:]
    final = json.loads((out / "metrics_final.json").read_text())
    assert final["iteration"] == 2
    bbox = final["results"]["bbox"]
    assert all(math.isfinite(bbox[k]) for k in ("AP", "AP50", "AP75"))
    detections = json.loads((out / "inference" / f"real_{name}_val" /
                             "coco_instances_results.json").read_text())
    assert len({d["image_id"] for d in detections}) == N_VAL  # evaluated on real detections
    if len(classes) > 1:  # per-class AP, named by the converted categories
        assert {f"AP-{c}" for c in classes} <= set(bbox)
    assert "pr" in final["results"]
    assert (out / "model_final.pth").is_file()
    # Registration decoded every image once and kept the verdicts in OUTPUT_DIR/dataset_cache.
    (cache,) = (out / "dataset_cache").glob("image_checks-*.json")
    assert len(json.loads(cache.read_text())["files"]) == N_TRAIN + N_VAL
