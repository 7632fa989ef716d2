"""gn_det.visualize and its CLIs: the error viewer (tools/show_errors.py) colours TP / FP / FN where
the boxes are and writes PNGs of the image's size plus a contact sheet, on drawn scenes and on
real BCCD photographs; the dataset browser (tools/visualize_data.py) draws a dataset's GT as
annotated and as the training loader feeds it; bad input is one line."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from cli_harness import (HAND_ANNS, HAND_DETS, SHARED_DATA, TINY_MODEL_OPTS, TOY_CONFIG,
                         coco_scene, shared_data,
                         run_cli, tiny_dataset_opts)
from gn_det.evaluation.errors import ImageErrors, image_errors, worst_images
from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.results import load_ground_truth, load_results
from gn_det.visualize import (COLORS, OutlinedVisualizer, draw_image_errors, header_height,
                              write_error_images)

BCCD = SHARED_DATA / "bccd"


def rgb(hex_color):
    return np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])


def near(pixel, hex_color, tol=40):
    return np.abs(pixel.astype(int) - rgb(hex_color)).max() <= tol


def hand_scene(tmp_path, num_images=5):
    """The hand-counted scene with a grey 200x200 JPEG per image under tmp_path/images."""
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=num_images)
    root = tmp_path / "images"
    root.mkdir()
    for img in gt["images"]:
        Image.new("RGB", (200, 200), (128, 128, 128)).save(root / img["file_name"])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    return gt, dets, root


def errors_of(gt, dets):
    coco = load_ground_truth(gt)
    ev = evaluate_detections(coco, load_results(dets, coco), [0.5], [0.5])
    return ev, {e.image_id: e for e in image_errors(ev)}


def test_colours_are_where_the_boxes_are():
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=5)
    ev, by_image = errors_of(gt, dets)
    image = np.full((200, 200, 3), 128, np.uint8)
    out = draw_image_errors(image, by_image[1], ev.class_names)
    band = header_height(image)  # the header line's band above the image
    assert 10 < band < 30 and out.shape == (200 + band, 200, 3) and out.dtype == np.uint8
    assert near(out[band + 25, 150], COLORS["fp"])   # left edge of the c3 FP (150, 10, 30, 30)
    assert near(out[band + 165, 10], COLORS["fn"])   # left edge of the missed c3 GT (10, 150, ...)
    assert near(out[band + 30, 10], COLORS["tp"])    # left edge of the TP (10, 10, 40, 40)
    assert near(out[band + 120, 100], COLORS["fp"])  # the wrong-class c1 detection on the c2 GT
    assert near(out[band + 100, 80], "#808080", tol=2)  # away from every box: untouched
    assert near(out[band - 2, 199], "#181818", tol=2)   # the band


def one_poor_localization(iou, score=0.9):
    """An image with one FP of kind poor_localization (IoU `iou` with its GT) and one TP."""
    det = {"bbox": [60, 30, 100, 100], "label": 0, "score": score, "iou": iou,
           "kind": "poor_localization", "gt_label": None, "paired": False}
    tp = dict(det, bbox=[150, 100, 40, 40], kind="tp", iou=0.9, score=0.5004)
    gt = {"id": 1, "bbox": [20, 20, 100, 100], "label": 0, "status": "fn",
          "confused_with": None}
    return ImageErrors(1, "x.jpg", 200, 200, gt=[gt], dets=[det, tp])


@pytest.mark.parametrize("iou, threshold, shown", [
    (0.4959, 0.5, "IoU 0.496"),  # was "IoU 0.50": read as a match at the 0.5 threshold
    (0.62, 0.75, "IoU 0.62"),
    (0.7496, 0.75, "IoU 0.7496"),
])
def test_labels_show_which_side_of_the_threshold_a_value_is(monkeypatch, iou, threshold, shown):
    texts = []
    real = OutlinedVisualizer.draw_text

    def draw_text(self, text, *args, **kwargs):
        texts.append(text)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(OutlinedVisualizer, "draw_text", draw_text)
    draw_image_errors(np.full((200, 200, 3), 128, np.uint8), one_poor_localization(iou),
                      ["raccoon"], iou=threshold, score=0.5)
    assert f"FP loc raccoon 0.90 {shown}" in texts
    assert "raccoon 0.5004" in texts  # a kept score just above 0.5 does not read "0.50"


@pytest.mark.parametrize("color", [(0.93, 0.87, 0.75), (0.4, 0.05, 0.05)], ids=["pale", "dark"])
@pytest.mark.parametrize("background", [(110, 80, 50), (255, 255, 255), (0, 0, 0)],
                         ids=["brown", "white", "black"])
def test_boxes_have_an_outline_that_shows_on_any_background(background, color):
    """A pale box (detectron2 draws dataset boxes at alpha 0.5 in random light colours) gets dark
    edges, a dark box light ones: on brown fur, white and black, both a dark and a light band
    cross the box's edge."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[:] = background
    v = OutlinedVisualizer(image, metadata=None, scale=1.0)
    v.draw_box((40, 30, 120, 90), edge_color=color)
    out = v.get_output().get_image().astype(int)
    across = out[60, 30:50].sum(axis=1) / 3  # grey level across the box's left edge
    assert across.min() < 100 and across.max() > 180, across
    assert (np.abs(out[5:20, 5:20] - background).max()) <= 2  # nothing drawn away from the box


def test_writes_ranked_pngs_and_a_contact_sheet(tmp_path):
    gt, dets, root = hand_scene(tmp_path)
    ev, by_image = errors_of(gt, dets)
    worst = worst_images(list(by_image.values()), 3)
    paths = write_error_images(worst, str(root), str(tmp_path / "out"), ev.class_names, "gt.json")
    names = [os.path.basename(p) for p in paths]
    assert names == ["001_1.png", "002_5.png", "003_4.png", "contact_sheet.png"]
    band = header_height(np.zeros((200, 200, 3), np.uint8))
    for p in paths[:3]:
        assert Image.open(p).size == (200, 200 + band)
    w, h = Image.open(paths[-1]).size
    assert w > 600 and h > 300


def test_missing_and_truncated_images_are_named(tmp_path):
    gt, dets, root = hand_scene(tmp_path)
    ev, by_image = errors_of(gt, dets)
    worst = worst_images(list(by_image.values()), 2)
    (root / "5.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"gt.json: 1 of the 2 images to draw are not "
                                                r"under .*images, e.g. '5.jpg'"):
        write_error_images(worst, str(root), str(tmp_path / "out"), ev.class_names, "gt.json")
    data = (root / "1.jpg").read_bytes()
    (root / "5.jpg").write_bytes(data[:len(data) * 2 // 3])  # a JPEG cut short
    with pytest.raises((OSError, ValueError), match=r"image file .*5\.jpg of dataset 'gt.json' "
                                                    r"cannot be read \(OSError: image file is "
                                                    r"truncated"):
        write_error_images(worst, str(root), str(tmp_path / "out"), ev.class_names, "gt.json")


def test_show_errors_cli(tmp_path):
    _, _, root = hand_scene(tmp_path, num_images=6)
    out = tmp_path / "out"
    code, stdout, err = run_cli("show_errors", [
        "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"),
        "--image-root", str(root), "--out", str(out), "--num", "2"])
    assert code == 0, err
    assert ("TP 2, FP 8 (wrong class 4, duplicate 1, poor localization 0, background 3), FN 4"
            in stdout)
    assert "Confusion matrix at IoU 0.5, score >= 0.5" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "001_1.png", "002_5.png", "contact_sheet.png", "image_errors.csv", "image_errors.json"]
    rows = list(csv.DictReader((out / "image_errors.csv").open()))
    assert len(rows) == 6 and rows[0]["image_id"] == "1" and rows[0]["fn"] == "2"


def bccd_subset(tmp_path, stems=("BloodImage_00000", "BloodImage_00002", "BloodImage_00014")):
    """A few real BCCD photographs converted with datasets/voc_to_coco.py into tmp_path."""
    shared_data(BCCD / "Annotations")
    (tmp_path / "list.txt").write_text("\n".join(stems) + "\n")
    code, _, err = run_cli("voc_to_coco", [
        "--xml-dir", str(BCCD / "Annotations"), "--list", str(tmp_path / "list.txt"),
        "--image-dir", str(BCCD / "JPEGImages"), "--out", str(tmp_path / "bccd.json")])
    assert code == 0, err
    return tmp_path / "bccd.json", BCCD / "JPEGImages"


def test_show_errors_on_real_photographs(tmp_path):
    gt_path, root = bccd_subset(tmp_path)
    gt = json.loads(gt_path.read_text())
    wbc = next(c["id"] for c in gt["categories"] if c["name"] == "WBC")
    dets = []
    for i, a in enumerate(gt["annotations"]):
        x, y, w, h = a["bbox"]
        if i % 7 == 3:
            continue                                                   # missed
        cat = wbc if i % 7 == 5 and a["category_id"] != wbc else a["category_id"]  # wrong class
        shift = 0.6 * w if i % 7 == 1 else 0.0                         # poorly localized
        dets.append({"image_id": a["image_id"], "category_id": cat,
                     "bbox": [x + shift, y, w, h], "score": 0.9 - 0.001 * i})
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    code, stdout, err = run_cli("show_errors", [
        "--gt", str(gt_path), "--dt", str(tmp_path / "dt.json"), "--image-root", str(root),
        "--out", str(out), "--num", "3"])
    assert code == 0, err
    summary = json.loads((out / "image_errors.json").read_text())["totals"]
    assert summary["fp_wrong_class"] > 0 and summary["fp_poor_localization"] > 0
    assert summary["fn"] > summary["fp_wrong_class"]  # missed + the GT of the shifted boxes
    pngs = sorted(out.glob("0*.png"))
    band = header_height(np.zeros((480, 640, 3), np.uint8))
    assert len(pngs) == 3 and all(Image.open(p).size == (640, 480 + band) for p in pngs)
    w, h = Image.open(out / "contact_sheet.png").size  # 2 x 2 tiles of 4.5 in at 110 dpi
    assert w == 990 and abs(h - 110 * (2 * (4.5 * (480 + band) / 640 + 0.45) + 0.6)) <= 1


def test_dataset_browser_on_real_photographs(tmp_path):
    gt_path, root = bccd_subset(tmp_path)
    out = tmp_path / "browse"
    code, stdout, err = run_cli("visualize_data", [
        "--config-file", TOY_CONFIG, "--dataset", "bccd_browse", "--output", str(out),
        "DATASETS.COCO_FORMAT", str([["bccd_browse", str(gt_path), str(root)]]),
        "DATASETS.TRAIN", "('bccd_browse',)", "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(tmp_path / "o")])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "BloodImage_00000.png", "BloodImage_00002.png", "BloodImage_00014.png"]
    drawn = np.asarray(Image.open(out / "BloodImage_00000.png"))
    photo = np.asarray(Image.open(root / "BloodImage_00000.jpg").convert("RGB"))
    assert drawn.shape == photo.shape == (480, 640, 3)
    assert np.abs(drawn.astype(int) - photo).max() > 100  # boxes and labels were drawn


def test_dataset_browser_dataloader_source(tmp_path, tiny_shapes):
    out = tmp_path / "browse"
    code, stdout, err = run_cli("visualize_data", [
        "--config-file", TOY_CONFIG, "--source", "dataloader", "--num", "3", "--output", str(out),
        *tiny_dataset_opts(tiny_shapes, "browse"), *TINY_MODEL_OPTS,
        "OUTPUT_DIR", str(tmp_path / "o")])
    assert code == 0, err
    assert "wrote 3 images of browse_train (dataloader)" in stdout
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and all(Image.open(p).size == (64, 64) for p in pngs)


def test_dataset_browser_unknown_name(tmp_path, tiny_shapes):
    code, _, err = run_cli("visualize_data", [
        "--config-file", TOY_CONFIG, "--dataset", "nope", "--output", str(tmp_path / "b"),
        *tiny_dataset_opts(tiny_shapes, "browse"), "OUTPUT_DIR", str(tmp_path / "o")])
    lines = [line for line in err.splitlines() if line.startswith("visualize_data: error:")]
    assert code == 2 and len(lines) == 1
    assert "--dataset 'nope' is not registered" in lines[0]
    assert "DATASETS.COCO_FORMAT names: browse_train, browse_val" in lines[0]
