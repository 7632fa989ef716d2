"""gn_det.export: the toy R-18 RetinaNet exported (WS folded) to TorchScript and ONNX equals eager
PyTorch per detection, for every norm; the check refuses a model an exporter got wrong and names
the norm; an op that cannot be exported is named with its layer; detection matching itself."""
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from cli_harness import (SHARED_DATA, TINY_MODEL_OPTS, TOY_CONFIG, run_cli, shared_data,
                         tiny_dataset_opts)
from helpers import REPO
from gn_det import export
from gn_det.benchmark.export import like_trained
from gn_det.layers import NormSpec, build_norm

pytest.importorskip("onnxruntime")

# norm -> (MODEL.NORMS TYPE, WS, extra opts, input size). LN_CHW is the GN paper's LN,
# GroupNorm(1, C). IN normalizes each channel over its own map, which needs P7 (stride 128)
# larger than 1x1: 160 px.
NORMS = {
    "GN": ("GN", False, [], 64),
    "LN_CHW": ("LN_CHW", False, [], 64),
    "IN": ("IN", False, [], 160),
    "GN+WS": ("GN", True, [], 64),
    "BN": ("BN", False, [], 64),
}
PHOTO = SHARED_DATA / "raccoon" / "images" / "raccoon-1.jpg"


def model_opts(norm: str):
    """Config opts of the tiny toy model with `norm` everywhere (as the CLI takes them)."""
    kind, ws, opts, size = NORMS[norm]
    opts = [*TINY_MODEL_OPTS, *opts, "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST",
            str(size)]
    for component in ("BACKBONE", "FPN", "RETINANET_HEAD"):
        opts += [f"MODEL.NORMS.{component}.TYPE", kind, f"MODEL.NORMS.{component}.WS", str(ws)]
    return opts


def tiny_cfg(norm: str):
    from gn_det.config import load_cfg

    return load_cfg(TOY_CONFIG, [*model_opts(norm), "MODEL.DEVICE", "cpu"])


def save_checkpoint(model, folder) -> str:
    """The model saved as training saves it: folder/model_final.pth."""
    from gn_det.checkpoint import AtomicCheckpointer

    folder.mkdir()
    AtomicCheckpointer(model, str(folder)).save("model_final")
    return str(folder / "model_final.pth")


def tiny_model(norm: str):
    from detectron2.modeling import build_model

    cfg = tiny_cfg(norm)
    torch.manual_seed(0)
    return cfg, like_trained(build_model(cfg))


def random_samples(size: int, count: int = 2):
    """Random images at the test size and, to check the exported graph's dynamic input, one
    32 px taller (its original size twice the input's)."""
    gen = torch.Generator().manual_seed(1)
    return [export.Sample(f"random{i}", torch.rand(3, size + 32 * i, size, generator=gen) * 255,
                          2 * (size + 32 * i), 2 * size) for i in range(count)]


@pytest.mark.parametrize("norm", list(NORMS))
def test_exported_model_equals_eager_per_detection(norm, tmp_path):
    """Both formats, WS folded, checked inside export_model against the eager (unfolded) model;
    the report's numbers are the ones DEPLOY.md quotes."""
    cfg, model = tiny_model(norm)
    samples = random_samples(NORMS[norm][3])
    try:
        report = export.export_model(model, cfg, samples, str(tmp_path))
    except export.ExportError as e:
        pytest.fail(f"{norm}: {e}")
    assert sorted(os.listdir(tmp_path)) == ["export.json", "model.onnx", "model.ts"]
    tol = export.DEFAULT_TOLERANCE
    for fmt, result in report["formats"].items():
        for name, cmp in result["samples"].items():
            assert cmp["matched"] == cmp["reference"] == cmp["exported"] > 10, (norm, fmt, name)
            assert cmp["max_box_excess"] <= 1 and cmp["max_score_diff"] <= tol.score_atol
        if fmt == "torchscript":  # the trace runs eager's own ops: bit-identical
            assert result["max_box_diff_px"] == 0 and result["max_score_diff"] == 0, norm
    assert report["ws_convs_folded"] == (28 if "WS" in norm else 0)


def test_tool_exports_a_checkpoint_and_runs_on_a_real_photograph(tmp_path):
    """tools/export_model.py on a saved GN+WS checkpoint and a real photograph (raccoon): it
    says what runs inside and outside the graph, writes checked files, and the ONNX model plus
    the outside steps (resize, postprocess) give eager's detections at the photo's size."""
    shared_data(PHOTO)
    cfg, model = tiny_model("GN+WS")
    weights = save_checkpoint(model, tmp_path / "run")
    out = tmp_path / "export"
    code, stdout, stderr = run_cli("export_model", [
        "--config-file", TOY_CONFIG, "--output", str(out), "--sample-image", str(PHOTO),
        *model_opts("GN+WS"), "MODEL.WEIGHTS", weights])
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
    cfg, model = tiny_model("GN")
    weights = save_checkpoint(model, tmp_path / "run")
    out = tmp_path / "export"
    code, stdout, stderr = run_cli("export_model", [
        "--config-file", TOY_CONFIG, "--format", "torchscript", "--output", str(out),
        "--num-samples", "2", *tiny_dataset_opts(tiny_shapes), *model_opts("GN"),
        "MODEL.WEIGHTS", weights])
    assert code == 0, stderr[-2000:]
    assert sorted(os.listdir(out)) == ["export.json", "model.ts"]
    report = json.loads((out / "export.json").read_text())
    val = json.loads((tiny_shapes / "annotations" / "val.json").read_text())["images"]
    assert list(report["formats"]["torchscript"]["samples"]) == [im["file_name"]
                                                                 for im in val[:2]]
    assert report["formats"]["torchscript"]["max_box_diff_px"] == 0


def test_a_norm_the_exporter_gets_wrong_is_named_and_not_written(tmp_path):
    """An ONNX symbolic for group_norm that drops the affine (what a faulty opset conversion
    does): the check fails, names the GroupNorm layers, and model.onnx is not written."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    def group_norm_without_affine(g, x, num_groups, weight, bias, eps, cudnn_enabled):
        from torch.onnx.symbolic_opset9 import group_norm

        return group_norm(g, x, num_groups, None, None, eps, cudnn_enabled)

    cfg, model = tiny_model("GN")
    register_custom_op_symbolic("aten::group_norm", group_norm_without_affine,
                                export.ONNX_OPSET)
    try:
        with pytest.raises(export.ExportError) as info:
            export.export_model(model, cfg, random_samples(64, 1), str(tmp_path / "out"),
                                formats=["onnx"])
    finally:
        unregister_custom_op_symbolic("aten::group_norm", export.ONNX_OPSET)
    message = str(info.value)
    assert message.startswith("ONNX Runtime (CPUExecutionProvider) differs from eager PyTorch on "
                              "random0 (64x64): "), message
    assert "; norm layers exported wrongly: backbone.fpn_lateral3.norm (GroupNorm(8, 32, eps=" \
        in message and "; backbone.bottom_up.stem.conv1.norm (GroupNorm(8, 64, eps=" in message
    assert message.endswith("; +2 more; model.onnx not written")
    assert os.listdir(tmp_path / "out") == []  # no model, no temp file, no report


def test_an_op_that_cannot_be_exported_is_named_with_its_layer(tmp_path):
    class Erfinv(nn.Module):
        def forward(self, x):
            return torch.erfinv(torch.tanh(x)) + x

    cfg, model = tiny_model("GN")
    model.head.cls_subnet[2] = Erfinv()  # replaces the head's ReLU
    with pytest.raises(export.ExportError) as info:
        export.export_model(model, cfg, random_samples(64, 1), str(tmp_path), formats=["onnx"])
    assert str(info.value).startswith("onnx export failed: op aten::erfinv in head.cls_subnet.2 "
                                      "cannot be exported (UnsupportedOperatorError: Exporting "
                                      "the operator 'aten::erfinv' to ONNX opset version 17"), \
        str(info.value)


ALONE = {"GN": (NormSpec("GN"), 64), "LN_CHW": (NormSpec("LN_CHW"), 64),
         "IN": (NormSpec("IN"), 32),
         "GN 16 channels/group": (NormSpec("GN", channels_per_group=16), 64),
         "BN": (NormSpec("BN"), 32), "FrozenBN": (NormSpec("FrozenBN"), 32)}


@pytest.mark.parametrize("spec, channels", list(ALONE.values()), ids=list(ALONE))
@pytest.mark.parametrize("fmt", export.FORMATS)
def test_each_norm_exports_alone(spec, channels, fmt):
    """Every norm build_norm makes, exported alone at opset 17: an exporter that gets one wrong
    fails here under that norm's name."""
    norm = build_norm(spec, channels)
    with torch.no_grad():
        for name, value in list(norm.named_parameters()) + list(norm.named_buffers()):
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + (0.5 if "var" in name else -0.2))
    diff = export.probe_norm(fmt, norm)
    assert diff <= 1e-5, f"{fmt}: {norm} differs from eager by {diff:.3g}"


def dets(boxes, scores, classes):
    return export.Detections(np.asarray(boxes, float), np.asarray(scores, float),
                             np.asarray(classes))


def test_matching_pairs_detections_not_indices():
    ref = dets([[0, 0, 10, 10], [20, 20, 60, 50], [5, 5, 15, 15]], [0.9, 0.8, 0.3], [0, 1, 0])
    tol = export.Tolerance(box_atol=1e-4, box_rtol=1e-5, score_atol=1e-5)
    swapped = dets([[5, 5, 15, 15], [0, 0, 10, 10.00009], [20, 20, 60, 50]], [0.3, 0.9, 0.8],
                   [0, 0, 1])
    cmp = export.match_detections(ref, swapped, tol)
    assert cmp.ok and cmp.matched == 3 and cmp.max_box_diff == pytest.approx(9e-5)
    # 40 px box: 1e-4 + 4e-4 allowed; a 6e-4 shift is over it, a 4e-4 one is not
    for shift, ok in ((4e-4, True), (6e-4, False)):
        moved = dets([[0, 0, 10, 10], [20, 20, 60 + shift, 50], [5, 5, 15, 15]],
                     [0.9, 0.8, 0.3], [0, 1, 0])
        assert export.match_detections(ref, moved, tol).ok is ok, shift
    other_class = dets(ref.boxes, ref.scores, [0, 2, 0])
    cmp = export.match_detections(ref, other_class, tol)
    assert not cmp.ok and cmp.matched == 2 and len(cmp.unmatched) == 2
    score = dets(ref.boxes, [0.9, 0.8, 0.3001], ref.classes)
    assert "a score differs by 0.0001" in export.match_detections(ref, score, tol).unmatched[0]


def test_matching_lets_cut_offs_decide_only_at_their_edge():
    """A detection only one side kept passes when its score sits at the score threshold, or at
    the other side's lowest score while that side is full; anywhere else it fails."""
    tol = export.Tolerance()
    ref = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.050001], [0, 0])
    one = dets([[0, 0, 10, 10]], [0.9], [0])
    assert export.match_detections(ref, one, tol, score_thresh=0.05).ok
    assert not export.match_detections(ref, one, tol, score_thresh=0.01).ok
    full = dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.4], [0, 1])
    extra = dets([[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]], [0.9, 0.4, 0.399999],
                 [0, 1, 2])
    assert export.match_detections(full, extra, tol, max_detections=2).ok
    assert not export.match_detections(full, extra, tol, max_detections=3).ok


def test_only_retinanet_models_are_exported():
    with pytest.raises(export.ExportError, match="MODEL.META_ARCHITECTURE Linear: export "
                                                 "supports RetinaNet models"):
        export.check_supported(nn.Linear(2, 2))
