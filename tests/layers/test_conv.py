"""gn_det.layers.conv: the conv builder turns (norm, WS) data into the right modules."""
import pytest
import torch
from torch import nn

from detectron2.layers import Conv2d
from gn_det.layers import (ConvNormSpec, NormSpec, WSConv2d, WSSpec, build_conv, convert_to_ws,
                          norm_arg)


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


def test_norm_arg_feeds_detectron2_modules():
    from detectron2.layers import get_norm
    from detectron2.modeling.backbone.resnet import BottleneckBlock

    assert norm_arg(NormSpec("")) == ""
    factory = norm_arg(NormSpec("GN", num_groups=8), layer="res2.0")
    assert factory.spec.num_groups == 8 and get_norm(factory, 64).num_groups == 8
    block = BottleneckBlock(64, 256, bottleneck_channels=64, norm=factory)
    assert all(isinstance(c.norm, nn.GroupNorm) for c in (block.conv1, block.conv2, block.conv3))
    with pytest.raises(ValueError, match="layer res2.0: GN with G=8 groups needs C=20"):
        factory(20)


def test_convert_to_ws_keeps_parameters_norm_and_excludes():
    head = nn.Sequential(Conv2d(4, 8, 3, padding=1, norm=nn.GroupNorm(2, 8)), nn.ReLU(),
                         nn.Conv2d(8, 3, 1))
    weight = head[0].weight
    x = torch.randn(1, 4, 5, 5)
    convert_to_ws(head, WSSpec(False))
    assert type(head[0]) is Conv2d  # WS off: untouched
    convert_to_ws(head, WSSpec(True, "mmcv"), exclude=[head[2]])
    assert isinstance(head[0], WSConv2d) and head[0].weight is weight
    assert isinstance(head[0].norm, nn.GroupNorm) and head[0].ws_style == "mmcv"
    assert type(head[2]) is nn.Conv2d
    assert head(x).shape == (1, 3, 5, 5)
