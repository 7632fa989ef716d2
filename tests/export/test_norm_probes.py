"""gn_det.export.norm_probes: every norm build_norm makes (the small-batch ones too: BRN, timm's
FRN and EvoNorm-S0), exported alone in each format, equals eager; a model's distinct norm
configurations are each probed once."""
import pytest
import torch
from torch import nn

from gn_det import export
from gn_det.export.norm_probes import PROBE_RUNNERS
from gn_det.layers import TIMM_NORMS, NormSpec, build_norm

pytest.importorskip("onnxruntime")

ALONE = {"GN": (NormSpec("GN"), 64), "LN_CHW": (NormSpec("LN_CHW"), 64),
         "IN": (NormSpec("IN"), 32),
         "GN 16 channels/group": (NormSpec("GN", channels_per_group=16), 64),
         "BN": (NormSpec("BN"), 32), "FrozenBN": (NormSpec("FrozenBN"), 32),
         "BRN": (NormSpec("BRN"), 32), "FRN": (NormSpec("FRN"), 32),
         "EvoNormS0": (NormSpec("EvoNormS0", num_groups=8), 32)}


@pytest.mark.parametrize("spec, channels", list(ALONE.values()), ids=list(ALONE))
@pytest.mark.parametrize("fmt", list(PROBE_RUNNERS))  # the float32 forms
def test_each_norm_exports_alone(spec, channels, fmt):
    """Every norm build_norm makes, exported alone at opset 17: an exporter that gets one wrong
    fails here under that norm's name."""
    if spec.type in TIMM_NORMS:
        pytest.importorskip("timm")
    norm = build_norm(spec, channels)
    with torch.no_grad():
        for name, value in list(norm.named_parameters()) + list(norm.named_buffers()):
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + (0.5 if "var" in name else -0.2))
    diff = export.probe_norm(fmt, norm)
    assert diff <= 1e-5, f"{fmt}: {norm} differs from eager by {diff:.3g}"


def test_norm_layers_keeps_one_layer_per_configuration():
    """Two GroupNorm(8, 32) count once, by the first one's name; another group count or eps is
    another configuration; convs are not norms."""
    model = nn.Sequential(nn.Conv2d(3, 32, 1), nn.GroupNorm(8, 32), nn.GroupNorm(8, 32),
                          nn.GroupNorm(4, 32), nn.GroupNorm(8, 32, eps=1e-3),
                          nn.BatchNorm2d(32))
    assert list(export.norm_layers(model)) == ["1", "3", "4", "5"]


def test_timm_norms_of_other_widths_are_other_configurations():
    """timm's reprs name no channel count: the layer's parameters tell the widths apart."""
    pytest.importorskip("timm")
    model = nn.Sequential(build_norm("FRN", 16), build_norm("FRN", 16), build_norm("FRN", 32),
                          build_norm(NormSpec("EvoNormS0", num_groups=4), 16))
    assert list(export.norm_layers(model)) == ["0", "2", "3"]
