"""gn_det.export.pipeline: the toy R-18 RetinaNet exported (WS folded) to TorchScript and ONNX
equals eager PyTorch per detection, for every norm; per-class score thresholds attached to the
model are in the exported graph and give eager's thresholded detections; the check refuses a
model an exporter got wrong and names the norm; an op that cannot be exported is named with its
layer."""
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic
from torch.onnx.symbolic_opset9 import group_norm

from helpers import EXPORT_NORMS, tiny_export_model
from gn_det import export
from gn_det.evaluation.thresholds import parse_thresholds
from gn_det.modeling.score_thresholds import attach_score_thresholds

pytest.importorskip("onnxruntime")


def random_samples(size: int, count: int = 2):
    """Random images at the test size and, to check the exported graph's dynamic input, one
    32 px taller (its original size twice the input's)."""
    gen = torch.Generator().manual_seed(1)
    return [export.Sample(f"random{i}", torch.rand(3, size + 32 * i, size, generator=gen) * 255,
                          2 * (size + 32 * i), 2 * size) for i in range(count)]


@pytest.mark.slow
@pytest.mark.parametrize("norm", list(EXPORT_NORMS))
def test_exported_model_equals_eager_per_detection(norm, tmp_path):
    """Both formats, WS folded, checked inside export_model against the eager (unfolded) model;
    the report's numbers are the ones DEPLOY.md quotes."""
    cfg, model = tiny_export_model(norm)
    samples = random_samples(EXPORT_NORMS[norm][3])
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


@pytest.mark.slow
def test_score_thresholds_are_in_the_exported_graph(tmp_path):
    """Thresholds attached to the eager model (as MODEL.SCORE_THRESHOLDS_FILE does) are traced
    as tensor ops: TorchScript and ONNX Runtime give eager's thresholded detections one for one,
    every kept detection passes its class's threshold, and export.json records them."""
    cfg, model = tiny_export_model("GN")
    samples = random_samples(64)
    unthresholded = export.eager_detections(model, samples[0])
    cut = float(np.median(unthresholded.scores))
    thresholds = parse_thresholds({"format": "gn_det.thresholds", "version": 1, "classes": {
        "a": {"category_id": 1, "threshold": cut}, "b": {"category_id": 2, "threshold": None}}},
        "t.json")
    attach_score_thresholds(model, thresholds, ["a", "b", "c", "d"])
    report = export.export_model(model, cfg, samples, str(tmp_path))
    assert report["score_thresholds"]["thresholds"] == {  # recorded to 6 decimals
        "a": pytest.approx(cut, abs=5e-7), "b": None, "c": 0.05, "d": 0.05}
    for fmt in export.DEFAULT_FORMATS:
        for name, cmp in report["formats"][fmt]["samples"].items():
            assert cmp["matched"] == cmp["reference"] == cmp["exported"] > 5, (fmt, name)
        got = export.load_runner(fmt, str(tmp_path / export.FILE_NAMES[fmt]))(samples[0].image)
        assert 0 < len(got) < len(unthresholded) and not (got.classes == 1).any()
        assert (got.scores[got.classes == 0] >= np.float32(cut)).all()
        eager = export.eager_detections(model, samples[0])
        assert sorted(got.scores.tolist()) == pytest.approx(sorted(eager.scores.tolist()),
                                                            abs=1e-6)


@pytest.mark.slow
def test_a_norm_the_exporter_gets_wrong_is_named_and_not_written(tmp_path):
    """An ONNX symbolic for group_norm that drops the affine (what a faulty opset conversion
    does): the check fails, names the GroupNorm layers, and model.onnx is not written."""
    def group_norm_without_affine(g, x, num_groups, weight, bias, eps, cudnn_enabled):
        return group_norm(g, x, num_groups, None, None, eps, cudnn_enabled)

    cfg, model = tiny_export_model("GN")
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


@pytest.mark.slow
def test_an_op_that_cannot_be_exported_is_named_with_its_layer(tmp_path):
    class Erfinv(nn.Module):
        def forward(self, x):
            return torch.erfinv(torch.tanh(x)) + x

    cfg, model = tiny_export_model("GN")
    model.head.cls_subnet[2] = Erfinv()  # replaces the head's ReLU
    with pytest.raises(export.ExportError) as info:
        export.export_model(model, cfg, random_samples(64, 1), str(tmp_path), formats=["onnx"])
    assert str(info.value).startswith("onnx export failed: op aten::erfinv in head.cls_subnet.2 "
                                      "cannot be exported (UnsupportedOperatorError: Exporting "
                                      "the operator 'aten::erfinv' to ONNX opset version 17"), \
        str(info.value)


def test_only_retinanet_models_are_exported():
    with pytest.raises(export.ExportError, match="MODEL.META_ARCHITECTURE Linear: export "
                                                 "supports RetinaNet models"):
        export.check_supported(nn.Linear(2, 2))
