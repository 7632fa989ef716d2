"""gn_det.modeling.resnet: per-component GN / GN+WS ResNets that stay detectron2's ResNet."""
import contextlib

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from gn_det.config import add_gn_det_config
from gn_det.layers import WSConv2d
from gn_det.modeling.resnet import make_resnet

from helpers import D2_NORM_NAMES, assert_same_network, process_group_of_one

STAGES = ["res2", "res3", "res4", "res5"]


def make_cfg(**opts):
    cfg = add_gn_det_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_gn_resnet_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = STAGES
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    return cfg


def convs(module):
    return {n: m for n, m in module.named_modules() if isinstance(m, nn.Conv2d)}


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_every_depth_matches_detectron2_names_shapes_and_outputs(depth):
    opts = {"MODEL.RESNETS.DEPTH": depth, "MODEL.RESNETS.NORM": "GN"}  # both builders read it
    if depth < 50:
        opts["MODEL.RESNETS.RES2_OUT_CHANNELS"] = 64
    cfg = make_cfg(**opts)
    ours = build_backbone(cfg)
    theirs = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    assert ours.output_shape() == theirs.output_shape()
    assert shapes(ours) == shapes(theirs)
    out = ours(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        k: (s.channels, 64 // s.stride, 64 // s.stride) for k, s in ours.output_shape().items()}


@pytest.mark.parametrize("norm", D2_NORM_NAMES)
def test_same_network_as_detectron2_with_its_own_norm_key(norm, tmp_path):
    """With only detectron2's MODEL.RESNETS.NORM set (any name its get_norm knows), ours is
    detectron2's network: the same module types, value for value."""
    cfg = make_cfg(**{"MODEL.RESNETS.NORM": norm, "MODEL.BACKBONE.FREEZE_AT": 2,
                      "MODEL.RESNETS.DEPTH": 18, "MODEL.RESNETS.RES2_OUT_CHANNELS": 64})
    # gn_det builds SyncBN only in a process group (both run in eval mode, without one)
    with process_group_of_one(tmp_path) if "SyncBN" in norm else contextlib.nullcontext():
        torch.manual_seed(1)
        ours = build_backbone(cfg).eval()
    torch.manual_seed(1)
    theirs = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert [type(m) for m in ours.modules()] == [type(m) for m in theirs.modules()]
    assert_same_network(ours, theirs)


def test_resnext_stride_placement_and_res5_dilation():
    cfg = make_cfg(**{"MODEL.RESNETS.NUM_GROUPS": 32, "MODEL.RESNETS.WIDTH_PER_GROUP": 4,
                      "MODEL.RESNETS.STRIDE_IN_1X1": False, "MODEL.RESNETS.RES5_DILATION": 2,
                      "MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.NORMS.BACKBONE.WS": True})
    model = build_backbone(cfg)
    theirs = cfg.clone()
    theirs.MODEL.RESNETS.NORM = "GN"
    assert shapes(model) == shapes(build_resnet_backbone(theirs, ShapeSpec(channels=3)))
    block = model.res3[0]
    assert block.conv2.groups == 32 and block.conv2.out_channels == 256
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)  # torchvision placement
    assert model.res5[0].conv2.dilation == (2, 2) and model.output_shape()["res5"].stride == 16


def test_norm_and_ws_reach_stem_every_block_and_shortcut():
    cfg = make_cfg(**{"MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.NORMS.BACKBONE.WS": True,
                      "MODEL.NORMS.WS.STYLE": "mmcv", "MODEL.NORMS.BACKBONE.NUM_GROUPS": 16})
    model = build_backbone(cfg)
    all_convs = convs(model)
    assert len(all_convs) == 1 + 16 * 3 + 4  # stem, 16 bottlenecks, 4 shortcuts
    assert {"stem.conv1", "res2.0.shortcut", "res5.0.shortcut", "res5.2.conv3"} <= set(all_convs)
    for name, conv in all_convs.items():
        assert isinstance(conv, WSConv2d) and conv.ws_style == "mmcv", name
        assert isinstance(conv.norm, nn.GroupNorm) and conv.norm.num_groups == 16, name
        assert conv.bias is None, name


def test_default_is_detectron2s_frozenbn_with_plain_convs():
    model = build_backbone(make_cfg())
    for name, conv in convs(model).items():
        assert type(conv) is Conv2d and isinstance(conv.norm, FrozenBatchNorm2d), name


def test_channels_per_group_mode():
    model = build_backbone(make_cfg(**{"MODEL.NORMS.BACKBONE.TYPE": "GN",
                                       "MODEL.NORMS.GN.CHANNELS_PER_GROUP": 16}))
    assert model.stem.conv1.norm.num_groups == 4 and model.res5[2].conv3.norm.num_groups == 128


@pytest.mark.parametrize("norm,ws", [("BN", False), ("GN", False), ("GN", True)])
def test_freeze_at_keeps_detectron2_semantics(norm, ws):
    model = build_backbone(make_cfg(**{"MODEL.NORMS.BACKBONE.TYPE": norm,
                                       "MODEL.NORMS.BACKBONE.WS": ws,
                                       "MODEL.BACKBONE.FREEZE_AT": 2}))
    frozen = [model.stem, model.res2]
    for stage in [model.stem, model.res2, model.res3, model.res5]:
        is_frozen = stage in frozen
        assert all(p.requires_grad != is_frozen for p in stage.parameters())
        for name, conv in convs(stage).items():
            assert isinstance(conv, WSConv2d) == ws, name
            if norm == "GN":  # GN stays GN when frozen; its affine is frozen with the stage
                assert type(conv.norm) is nn.GroupNorm, name
            else:  # only BN becomes FrozenBN, and only in frozen stages
                assert type(conv.norm) is (FrozenBatchNorm2d if is_frozen else nn.BatchNorm2d), name


@pytest.mark.parametrize("freeze_at", [0, 2])
def test_forward_backward_reaches_every_trainable_parameter(freeze_at):
    model = build_backbone(make_cfg(**{"MODEL.NORMS.BACKBONE.TYPE": "GN",
                                       "MODEL.NORMS.BACKBONE.WS": True,
                                       "MODEL.BACKBONE.FREEZE_AT": freeze_at}))
    out = model(torch.randn(2, 3, 64, 64))
    sum((v * torch.randn_like(v)).sum() for v in out.values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and name.startswith(("stem.", "res2.")), name
    assert any(not p.requires_grad for p in model.parameters()) == (freeze_at > 0)


def test_plain_arguments_without_cfg():
    model = make_resnet(depth=18, res2_out_channels=64, norm="GN", ws=True,
                        out_features=["res3"])
    assert not hasattr(model, "res4")  # stages after the last output are not built
    assert isinstance(model.res3[1].conv2, WSConv2d)
    assert model(torch.randn(1, 3, 32, 32))["res3"].shape == (1, 128, 4, 4)


def test_deformable_stages_reuse_detectron2_blocks():
    model = build_backbone(make_cfg(**{
        "MODEL.NORMS.BACKBONE.TYPE": "GN",
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, True, True]}))
    assert type(model.res4[0]).__name__ == "DeformBottleneckBlock"
    assert isinstance(model.res4[0].conv2.norm, nn.GroupNorm)


@pytest.mark.parametrize("opts,message", [
    ({"MODEL.NORMS.BACKBONE.TYPE": "batchgroup"}, r"MODEL.NORMS.BACKBONE.TYPE: unknown norm type"),
    ({"MODEL.RESNETS.NORM": "XN"},
     r"MODEL.RESNETS.NORM \(inherited by MODEL.NORMS.BACKBONE.TYPE\)"),
    ({"MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.NORMS.BACKBONE.NUM_GROUPS": 8,
      "MODEL.NORMS.BACKBONE.CHANNELS_PER_GROUP": 8}, r"MODEL.NORMS.BACKBONE: .*both set"),
    ({"MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.NORMS.GN.NUM_GROUPS": 48},
     r"layer backbone.stem: GN with G=48 groups needs C=64 divisible"),
    ({"MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.RESNETS.STEM_OUT_CHANNELS": 96,
      "MODEL.NORMS.GN.NUM_GROUPS": 48},
     r"layer backbone.res2.0: GN with G=48 groups needs C=\d+ divisible"),
    ({"MODEL.NORMS.BACKBONE.TYPE": "SyncBN"},
     r"layer backbone.stem: SyncBN needs a torch.distributed"),
    ({"MODEL.RESNETS.DEPTH": 20}, r"MODEL.RESNETS.DEPTH=20 is not supported; valid: 18, 34"),
    ({"MODEL.RESNETS.DEPTH": 18}, r"MODEL.RESNETS.RES2_OUT_CHANNELS=256: ResNet-18 .* needs 64"),
    ({"MODEL.RESNETS.RES5_DILATION": 4}, r"MODEL.RESNETS.RES5_DILATION=4; valid: 1, 2"),
    ({"MODEL.RESNETS.OUT_FEATURES": ["res6"]}, r"MODEL.RESNETS.OUT_FEATURES=\['res6'\]; valid"),
    ({"MODEL.NORMS.BACKBONE.WS": True, "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False] * 3 + [True]},
     r"deformable convs cannot be weight-standardized"),
])
def test_invalid_settings_fail_at_build_time_naming_the_key_or_layer(opts, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(make_cfg(**opts))
