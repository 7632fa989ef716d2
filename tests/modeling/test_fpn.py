"""gn_det.modeling.fpn: ResNet-FPN backbones with the FPN's own norm/WS, detectron2's features."""
import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import (build_resnet_fpn_backbone,
                                              build_retinanet_resnet_fpn_backbone)
from gn_det.config import add_gn_det_config
from gn_det.layers import WSConv2d
from gn_det.modeling.fpn import make_fpn
from gn_det.modeling.resnet import make_resnet

from helpers import assert_same_network

RETINANET = "build_gn_retinanet_resnet_fpn_backbone"
FASTER = "build_gn_resnet_fpn_backbone"


def make_cfg(name=RETINANET, **opts):
    cfg = add_gn_det_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = name
    features = ["res3", "res4", "res5"] if name == RETINANET else ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.OUT_FEATURES = features
    cfg.MODEL.FPN.IN_FEATURES = features
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    return cfg


def fpn_convs(fpn):
    return [m for n, m in fpn.named_children() if n.startswith(("fpn_lateral", "fpn_output"))]


@pytest.mark.parametrize("name,theirs", [(FASTER, build_resnet_fpn_backbone),
                                         (RETINANET, build_retinanet_resnet_fpn_backbone)])
def test_same_network_as_detectron2_with_its_own_norm_keys(name, theirs):
    """With only detectron2's keys set, ours is detectron2's FPN backbone, value for value."""
    cfg = make_cfg(name, **{"MODEL.FPN.NORM": "GN"})
    torch.manual_seed(1)
    ours = build_backbone(cfg).eval()
    torch.manual_seed(1)
    ref = theirs(cfg, ShapeSpec(channels=3)).eval()
    assert ours.output_shape() == ref.output_shape()
    assert list(ours.output_shape()) == (["p2", "p3", "p4", "p5", "p6"] if name == FASTER
                                         else ["p3", "p4", "p5", "p6", "p7"])
    assert ours.size_divisibility == ref.size_divisibility == 32
    assert_same_network(ours, ref)


def test_gn_fpn_over_frozenbn_backbone_with_plain_p6p7():
    """The 'gn_fpn_head' layout: FrozenBN + plain convs in the ResNet, GN+WS in the FPN only."""
    cfg = make_cfg(**{"MODEL.NORMS.FPN.TYPE": "GN", "MODEL.NORMS.FPN.WS": True})
    model = build_backbone(cfg)
    for name, m in model.bottom_up.named_modules():
        if isinstance(m, nn.Conv2d):
            assert type(m) is Conv2d and isinstance(m.norm, FrozenBatchNorm2d), name
    assert len(fpn_convs(model)) == 6
    for conv in fpn_convs(model):
        assert isinstance(conv, WSConv2d) and isinstance(conv.norm, nn.GroupNorm)
        assert conv.bias is None
    # FPN.forward reads its Python lists, so they must hold the WS convs, in top-down order.
    assert model.lateral_convs == [model.fpn_lateral5, model.fpn_lateral4, model.fpn_lateral3]
    assert model.output_convs == [model.fpn_output5, model.fpn_output4, model.fpn_output3]
    top = model.top_block
    assert top.in_feature == "res5" and top.p6.in_channels == 2048
    for conv in (top.p6, top.p7):
        assert type(conv) is nn.Conv2d and conv.bias is not None


def test_ws_is_used_in_forward():
    """Same parameters, WS on vs off: the FPN outputs differ (WS is on the forward path)."""
    plain = build_backbone(make_cfg(**{"MODEL.NORMS.FPN.TYPE": "GN"})).eval()
    ws = build_backbone(make_cfg(**{"MODEL.NORMS.FPN.TYPE": "GN",
                                    "MODEL.NORMS.FPN.WS": True})).eval()
    ws.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(x), ws(x)
    assert torch.equal(a["p6"], b["p6"])  # P6 comes from res5 (FrozenBN, no WS) through plain p6
    assert not torch.allclose(a["p3"], b["p3"], atol=1e-3)


@pytest.mark.parametrize("name", [FASTER, RETINANET])
def test_gnws_everywhere_forward_backward_reaches_every_trainable_parameter(name):
    cfg = make_cfg(name, **{"MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.NORMS.BACKBONE.WS": True,
                            "MODEL.NORMS.FPN.TYPE": "GN", "MODEL.NORMS.FPN.WS": True,
                            "MODEL.BACKBONE.FREEZE_AT": 2})
    model = build_backbone(cfg)
    assert all(isinstance(m, WSConv2d) for m in model.bottom_up.modules()
               if isinstance(m, nn.Conv2d))
    out = model(torch.randn(2, 3, 64, 64))
    sum((v * torch.randn_like(v)).sum() for v in out.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("top_block.p7") for n, _ in trainable) == (name == RETINANET)
    for n, p in trainable:
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_ws_adds_no_parameters():
    counts = {}
    for ws in (False, True):
        cfg = make_cfg(**{"MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.NORMS.BACKBONE.WS": ws,
                          "MODEL.NORMS.FPN.TYPE": "GN", "MODEL.NORMS.FPN.WS": ws})
        counts[ws] = sum(p.numel() for p in build_backbone(cfg).parameters())
    assert counts[False] == counts[True]


def test_make_fpn_from_code_leaves_bottom_up_alone():
    bottom_up = make_resnet(depth=18, res2_out_channels=64, out_features=["res4", "res5"])
    fpn = make_fpn(bottom_up, ["res4", "res5"], 64, norm="GN", ws=True)
    assert all(type(m) is Conv2d for m in bottom_up.modules() if isinstance(m, nn.Conv2d))
    assert all(isinstance(c, WSConv2d) for c in fpn_convs(fpn))
    assert {k: tuple(v.shape) for k, v in fpn(torch.randn(1, 3, 64, 64)).items()} == {
        "p4": (1, 64, 4, 4), "p5": (1, 64, 2, 2)}


@pytest.mark.parametrize("name,opts,message", [
    (RETINANET, {"MODEL.NORMS.FPN.TYPE": "GN", "MODEL.NORMS.FPN.NUM_GROUPS": 48},
     r"layer fpn: GN with G=48 groups needs C=256 divisible"),
    (RETINANET, {"MODEL.NORMS.FPN.TYPE": "layer"}, r"MODEL.NORMS.FPN.TYPE: unknown norm type"),
    (FASTER, {"MODEL.FPN.NORM": "GroupNorm"},
     r"MODEL.FPN.NORM \(inherited by MODEL.NORMS.FPN.TYPE\)"),
    (RETINANET, {"MODEL.NORMS.FPN.TYPE": "SyncBN"}, r"layer fpn: SyncBN needs"),
    (RETINANET, {"MODEL.RESNETS.OUT_FEATURES": ["res3", "res4"],
                 "MODEL.FPN.IN_FEATURES": ["res3", "res4"]},
     r"P6/P7 from res5"),
    (FASTER, {"MODEL.FPN.IN_FEATURES": ["res2", "res6"]},
     r"MODEL.FPN.IN_FEATURES=\['res2', 'res6'\]"),
    (FASTER, {"MODEL.FPN.FUSE_TYPE": "max"}, r"MODEL.FPN.FUSE_TYPE='max'; valid: sum, avg"),
])
def test_invalid_settings_fail_at_build_time(name, opts, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(make_cfg(name, **opts))
