"""gn_det.commands.export_model (tools/export_model.py) end to end: a saved YAML or LazyConfig
checkpoint exported and checked on a real photograph, a generated image or the test dataset's
first images; the ONNX model plus the steps outside it give eager's detections at the photo's
size."""
import json
import os

import numpy as np
import pytest
import torch

from cli_harness import SHARED_DATA, TOY_CONFIG, run_cli, shared_data, tiny_dataset_opts
from helpers import REPO, export_model_opts, save_checkpoint, tiny_export_model
from gn_det import export
from gn_det.benchmark.export_speed import like_trained

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # each exports a toy model through the command (10-30 s)

PHOTO = SHARED_DATA / "raccoon" / "images" / "raccoon-1.jpg"


def test_tool_exports_a_checkpoint_and_runs_on_a_real_photograph(tmp_path):
    """tools/export_model.py on a saved GN+WS checkpoint and a real photograph (raccoon): it
    says what runs inside and outside the graph, writes checked files, and the ONNX model plus
    the outside steps (resize, postprocess) give eager's detections at the photo's size."""
    shared_data(PHOTO)
    cfg, model = tiny_export_model("GN+WS")
    weights = save_checkpoint(model, tmp_path / "run")
    out = tmp_path / "export"
    code, stdout, stderr = run_cli("export_model", [
        "--config-file", TOY_CONFIG, "--output", str(out), "--sample-image", str(PHOTO),
        *export_model_opts("GN+WS"), "MODEL.WEIGHTS", weights])
    assert code == 0, stderr[-2000:]
    assert sorted(os.listdir(out)) == ["export.json", "model.onnx", "model.ts"]
    for text in ("inside the graph:", "outside, before the graph:", "outside, after the graph:",
                 "ResizeShortestEdge", "detector_postprocess", "28 WS convs folded",
                 "ONNX Runtime (CPUExecutionProvider) equals eager PyTorch on 1 sample(s)"):
        assert text in stdout, text
    from detectron2.data.detection_utils import read_image

    photo = read_image(str(PHOTO), format=cfg.INPUT.FORMAT)
    sample = export.prepare_image(cfg, photo, PHOTO.name)
    assert (sample.height, sample.width) == photo.shape[:2] != tuple(sample.image.shape[1:])
    onnx = export.postprocess(export.load_runner("onnx", str(out / "model.onnx"))(sample.image),
                              sample)
    with torch.no_grad():  # eager, as detectron2 evaluates: it resizes back itself
        eager = export.Detections.of(model([{"image": sample.image, "height": sample.height,
                                             "width": sample.width}])[0]["instances"])
    cmp = export.match_detections(eager, onnx, export.DEFAULT_TOLERANCE)
    assert cmp.ok and cmp.matched == len(eager) > 10, cmp.describe()
    assert onnx.boxes[:, 2].max() > sample.image.shape[2]  # in the photo's pixels, not the input's


def test_tool_exports_a_lazyconfig_model(tmp_path):
    """A LazyConfig preset (the toy GN+WS R-18) with train.init_checkpoint: the same export and
    check, the test size read from the test mapper's ResizeShortestEdge."""
    from detectron2.config import instantiate
    from gn_det.config import load_lazy_cfg

    config = str(REPO / "configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py")
    torch.manual_seed(0)
    model = like_trained(instantiate(load_lazy_cfg(config, ["train.init_checkpoint=''"]).model))
    weights = save_checkpoint(model, tmp_path / "run")
    cfg = export.load_export_config(config, [f"train.init_checkpoint={weights}"])
    conf = export.settings(cfg)
    assert (conf.min_size_test, conf.max_size_test, conf.input_format) == (160, 160, "BGR")
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.random.RandomState(0).randint(0, 255, (90, 120, 3), np.uint8)).save(image)
    code, stdout, stderr = run_cli("export_model", [
        "--config-file", config, "--output", str(tmp_path / "export"), "--sample-image",
        str(image), f"train.init_checkpoint={weights}"])
    assert code == 0, stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "export")) == ["export.json", "model.onnx", "model.ts"]
    report = json.loads((tmp_path / "export/export.json").read_text())
    assert report["config_norms"].startswith("BACKBONE=GN+WS") and report["ws_convs_folded"] > 0


def test_tool_takes_samples_from_the_test_dataset(tiny_shapes, tmp_path):
    """Without --sample-image: the first --num-samples images of DATASETS.TEST[0], as
    detectron2's export_model takes the first test batch (TorchScript alone here)."""
    cfg, model = tiny_export_model("GN")
    weights = save_checkpoint(model, tmp_path / "run")
    out = tmp_path / "export"
    code, stdout, stderr = run_cli("export_model", [
        "--config-file", TOY_CONFIG, "--format", "torchscript", "--output", str(out),
        "--num-samples", "2", *tiny_dataset_opts(tiny_shapes), *export_model_opts("GN"),
        "MODEL.WEIGHTS", weights])
    assert code == 0, stderr[-2000:]
    assert sorted(os.listdir(out)) == ["export.json", "model.ts"]
    report = json.loads((out / "export.json").read_text())
    val = json.loads((tiny_shapes / "annotations" / "val.json").read_text())["images"]
    assert list(report["formats"]["torchscript"]["samples"]) == [im["file_name"]
                                                                 for im in val[:2]]
    assert report["formats"]["torchscript"]["max_box_diff_px"] == 0


def test_tool_bakes_the_configs_score_thresholds_into_the_graph(tiny_shapes, tmp_path):
    """MODEL.SCORE_THRESHOLDS_FILE, matched by name to DATASETS.TEST[0]'s classes: the exported
    TorchScript keeps only what passes it, equal to the thresholded eager model's detections,
    and export.json and the output say which thresholds it holds."""
    cfg, model = tiny_export_model("GN")
    weights = save_checkpoint(model, tmp_path / "run")
    names = [c["name"] for c in json.loads(
        (tiny_shapes / "annotations" / "val.json").read_text())["categories"]]
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"format": "gn_det.thresholds", "version": 1,
                                      "rule": "target_precision", "classes": {
                                          names[0]: {"category_id": 1, "threshold": 0.155},
                                          names[1]: {"category_id": 2, "threshold": None}}}))
    out = tmp_path / "export"
    code, stdout, stderr = run_cli("export_model", [
        "--config-file", TOY_CONFIG, "--format", "torchscript", "--output", str(out),
        "--num-samples", "2", *tiny_dataset_opts(tiny_shapes), *export_model_opts("GN"),
        "MODEL.WEIGHTS", weights, "MODEL.SCORE_THRESHOLDS_FILE", str(thresholds)])
    assert code == 0, stderr[-2000:]
    assert (f"score thresholds in the graph ({thresholds}, target_precision): {names[0]} >= "
            f"0.155, {names[1]} none, {names[2]} >= 0.05") in stdout
    report = json.loads((out / "export.json").read_text())
    assert report["score_thresholds"]["thresholds"][names[1]] is None
    result = report["formats"]["torchscript"]
    assert result["max_box_diff_px"] == 0 and all(
        c["matched"] == c["reference"] == c["exported"] > 0 for c in result["samples"].values())
    run = export.load_runner("torchscript", str(out / "model.ts"))
    got = run(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2)) * 255)
    assert len(got) and not (got.classes == 1).any()
    assert (got.scores[got.classes == 0] >= np.float32(0.155)).all()
