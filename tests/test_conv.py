"""gn_det.layers.conv: the conv builder turns (norm, WS) data into the right modules."""
import pytest
import torch
from torch import nn

from detectron2.layers import Conv2d
from gn_det.layers import ConvNormSpec, NormSpec, WSConv2d, WSSpec, build_conv


def test_plain_conv_gets_bias_and_no_norm():
    conv = build_conv(4, 8, 3, padding=1)
    assert type(conv) is Conv2d and conv.norm is None and conv.bias is not None


def test_gn_ws_conv():
    spec = ConvNormSpec(NormSpec("GN", num_groups=4), WSSpec(True, "mmcv"))
    conv = build_conv(4, 8, 3, padding=1, spec=spec, activation=torch.relu)
    assert isinstance(conv, WSConv2d) and conv.ws_style == "mmcv" and conv.bias is None
    assert isinstance(conv.norm, nn.GroupNorm) and conv.norm.num_groups == 4
    assert conv(torch.randn(1, 4, 6, 6)).shape == (1, 8, 6, 6)
    assert spec.describe() == "GN+WS"


def test_spec_of_and_layer_name_in_errors():
    spec = ConvNormSpec.of("GN", True)
    assert spec.norm.type == "GN" and spec.ws.enabled
    with pytest.raises(ValueError, match="layer fpn.output2"):
        build_conv(8, 20, 3, spec=spec, layer="fpn.output2")
