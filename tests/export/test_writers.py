"""gn_det.export.writers, the bf16 TorchScript form: the toy GN+WS RetinaNet traced from the model
prepared for bf16 inference and frozen, written, loaded back and checked inside export_model:
float32 in and out, bf16 convs inside, equal to the eager model in bf16, and within a stated
tolerance of eager float32. Skipped where the CPU has no bf16 matrix units (the form is refused
there: tests/export/test_formats.py)."""
import json
import os

import pytest
import torch

from helpers import tiny_export_model
from gn_det import export
from gn_det.engine.precision import cpu_bf16_flags

pytestmark = pytest.mark.skipif(not cpu_bf16_flags(), reason="this CPU has no bf16 matrix units "
                                                             "(amx_bf16 / avx512_bf16)")

# The toy's random weights (made like trained) against eager float32: box deltas sum many
# terms that cancel, so bf16 rounding moves its boxes by up to 12 px (36 % of a box) and NMS
# keeps other boxes for 2-8 % of its detections (docs/DEPLOY.md); a trained model is far closer
# (export.BF16_TOLERANCE, measured on BCCD), which the toy fails.
TOY_BF16 = export.Tolerance(box_atol=2.0, box_rtol=0.5, score_atol=0.01, changed_share=0.25)


def samples():
    gen = torch.Generator().manual_seed(1)
    return [export.Sample(f"random{i}", torch.rand(3, 64 + 32 * i, 64, generator=gen) * 255,
                          64 + 32 * i, 64) for i in range(2)]


@pytest.mark.slow  # two exports of the toy model (10-20 s)
def test_bf16_torchscript_round_trip(tmp_path):
    cfg, model = tiny_export_model("GN+WS")
    report = export.export_model(model, cfg, samples(), str(tmp_path), ["torchscript_bf16"],
                                 TOY_BF16)
    assert sorted(os.listdir(tmp_path)) == ["export.json", "model_bf16.ts"]
    result = json.loads((tmp_path / "export.json").read_text())["formats"]["torchscript_bf16"]
    assert result == json.loads(json.dumps(report["formats"]["torchscript_bf16"]))
    assert result["precision"] == "bf16" and result["max_score_diff"] <= 0.01
    same = result["against_eager_same_precision"]
    for name, cmp in same["samples"].items():  # the trace runs eager bf16's own kernels
        assert cmp["matched"] >= 0.95 * cmp["reference"] > 30, name
    assert same["max_box_diff_px"] == 0 and same["max_score_diff"] == 0
    module = torch.jit.load(str(tmp_path / "model_bf16.ts"))
    with torch.no_grad():
        boxes, classes, scores, size = module(samples()[1].image)
    assert boxes.dtype == scores.dtype == torch.float32 and size.tolist() == [96, 64]
    graph = str(module.inlined_graph)
    assert graph.count("aten::_convolution") == 48  # every conv of the toy, in the graph
    assert any(getattr(p, "dtype", None) == torch.bfloat16 for p in _constants(module))
    # the default bf16 tolerance (a trained model's) refuses the toy: its changes exceed 20 %
    with pytest.raises(export.ExportError, match=r"^TorchScript bf16 \(torch\.jit\.load, frozen\) "
                                                 r"differs from eager PyTorch on random0 .* "
                                                 r"changed beyond the tolerance \(up to \d+ "
                                                 r"allowed\).*; model_bf16\.ts not written$"):
        export.export_model(model, cfg, samples()[:1], str(tmp_path / "default"),
                            ["torchscript_bf16"])
    assert os.listdir(tmp_path / "default") == []


def _constants(module):
    """The tensors a frozen TorchScript module holds as graph constants."""
    return [node.output().toIValue() for node in module.inlined_graph.nodes()
            if node.kind() == "prim::Constant" and node.output().type().kind() == "TensorType"]
