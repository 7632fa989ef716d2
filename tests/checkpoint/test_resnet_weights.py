"""gn_det.checkpoint.resnet_weights: pretrained weights (Caffe2 .pkl, torchvision naming) load into
our GN and GN+WS backbones, and give the same network as their source."""
import pickle

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from gn_det.config import add_gn_det_config
from gn_det.checkpoint.resnet_weights import (AUTHOR, convert_torchvision_file,
                                              convert_torchvision_state_dict, infer_resnet_arch,
                                              rename_torchvision_key)
from gn_det.checkpoint.weights_file import WeightsError, load_state_dict_file, save_d2_weights

STAGES = ["res2", "res3", "res4", "res5"]


def make_cfg(**opts):
    cfg = add_gn_det_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "build_gn_resnet_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = STAGES
    cfg.MODEL.FPN.IN_FEATURES = STAGES
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    return cfg


@pytest.mark.parametrize("key,expected", [
    ("conv1.weight", "stem.conv1.weight"),
    ("bn1.running_var", "stem.conv1.norm.running_var"),
    ("gn1.bias", "stem.conv1.norm.bias"),
    ("layer1.0.conv3.weight", "res2.0.conv3.weight"),
    ("layer2.1.gn2.weight", "res3.1.conv2.norm.weight"),
    ("layer4.2.bn3.running_mean", "res5.2.conv3.norm.running_mean"),
    ("layer3.0.downsample.0.weight", "res4.0.shortcut.weight"),
    ("layer3.0.downsample.1.bias", "res4.0.shortcut.norm.bias"),
    ("fc.weight", None), ("layer5.0.conv1.weight", None), ("layer1.0.downsample.2.weight", None),
])
def test_rename_torchvision_key(key, expected):
    assert rename_torchvision_key(key) == expected


# --- Caffe2 / Detectron .pkl (R-50-GN.pkl naming), through detectron2's own checkpointer --------

_BRANCH = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}


def detectron_blob_name(key):
    """detectron2 backbone key -> Detectron blob name (res2.0.conv1.norm.weight ->
    res2_0_branch2a_gn_s)."""
    *path, param = key.split(".")
    path = path[1:] if path[0] == "stem" else path[:2] + [_BRANCH[path[2]]] + path[3:]
    if path[-1] == "norm":
        path[-1], param = "gn", {"weight": "s", "bias": "b"}[param]
    else:
        param = {"weight": "w", "bias": "b"}[param]
    return "_".join(path + [param])


def test_detectron_blob_names_are_r50_gn_names():
    assert detectron_blob_name("stem.conv1.weight") == "conv1_w"
    assert detectron_blob_name("stem.conv1.norm.bias") == "conv1_gn_b"
    assert detectron_blob_name("res2.0.shortcut.norm.weight") == "res2_0_branch1_gn_s"
    assert detectron_blob_name("res5.2.conv2.weight") == "res5_2_branch2b_w"


@pytest.mark.parametrize("ws,wrapped", [(False, False), (True, True)])
def test_caffe2_gn_pkl_loads_into_gn_and_gnws_backbones(tmp_path, ws, wrapped):
    cfg = make_cfg(**{"MODEL.BACKBONE.NAME": "build_gn_resnet_fpn_backbone",
                      "MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.NORMS.BACKBONE.WS": ws,
                      "MODEL.NORMS.FPN.TYPE": "GN"})
    model = build_backbone(cfg)
    rng = np.random.default_rng(0)
    resnet = model.bottom_up.state_dict()
    blobs = {detectron_blob_name(k): rng.standard_normal(v.shape).astype(np.float32)
             for k, v in resnet.items()}
    # stem conv + GN, 16 blocks x 3 convs x (conv, GN), 4 shortcuts x (conv, GN)
    assert len(blobs) == len(resnet) == 1 + 2 + 16 * 3 * 3 + 4 * 3
    blobs.update(fc1000_w=np.zeros((1000, 2048), np.float32), fc1000_b=np.zeros(1000, np.float32))
    path = tmp_path / "R-50-GN.pkl"
    with open(path, "wb") as f:  # Detectron: detection models wrap the blobs, ImageNet ones not
        pickle.dump({"blobs": blobs} if wrapped else blobs, f)
    fpn_before = {k: v.clone() for k, v in model.state_dict().items()
                  if not k.startswith("bottom_up.")}

    DetectionCheckpointer(model).load(str(path))

    for key, value in model.bottom_up.state_dict().items():
        assert torch.equal(value, torch.from_numpy(blobs[detectron_blob_name(key)])), key
    for key, value in fpn_before.items():
        assert torch.equal(model.state_dict()[key], value), key


# --- torchvision naming: the same network, proven against torchvision (and timm's StdConv2d) ----

def torchvision_gn_resnet(arch="resnet50", ws=False):
    from timm.layers import StdConv2d

    net = getattr(torchvision.models, arch)(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
    for m in net.modules():  # torchvision initializes GN to (1, 0); randomize the affine
        if isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    if ws:
        _to_std_conv(net, StdConv2d)
    return net.eval()


def _to_std_conv(module, std_conv):
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            new = std_conv(child.in_channels, child.out_channels, child.kernel_size,
                           stride=child.stride, padding=child.padding, dilation=child.dilation,
                           groups=child.groups, bias=child.bias is not None)  # timm eps 1e-6
            new.weight = child.weight
            setattr(module, name, new)
        else:
            _to_std_conv(child, std_conv)


def torchvision_features(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    out = {}
    for i, stage in enumerate(STAGES, start=1):
        x = out[stage] = getattr(net, f"layer{i}")(x)
    return out


def convert_and_load(net, tmp_path, cfg, suffix=".pth"):
    torch.save(net.state_dict(), tmp_path / "torchvision.pth")
    report = convert_torchvision_file(tmp_path / "torchvision.pth", tmp_path / f"converted{suffix}")
    model = build_backbone(cfg).eval()
    DetectionCheckpointer(model).load(str(tmp_path / f"converted{suffix}"))
    return model, report


@pytest.mark.parametrize("ws", [False, True])
def test_converted_torchvision_gn_resnet50_is_the_same_network(tmp_path, ws):
    net = torchvision_gn_resnet(ws=ws)
    cfg = make_cfg(**{"MODEL.NORMS.BACKBONE.TYPE": "GN", "MODEL.NORMS.BACKBONE.WS": ws,
                      "MODEL.NORMS.WS.STYLE": "timm", "MODEL.RESNETS.STRIDE_IN_1X1": False})
    model, report = convert_and_load(net, tmp_path, cfg)
    assert (report.arch.depth, report.arch.norm, report.num_converted) == (50, "GN", 159)
    assert report.missing == [] and report.mismatched == []
    assert report.unexpected == ["fc.weight", "fc.bias"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(x), torchvision_features(net, x)
    for stage in STAGES:
        assert ours[stage].abs().max() > 0.1  # not a degenerate (all-zero) comparison
        torch.testing.assert_close(ours[stage], theirs[stage], rtol=1e-4, atol=1e-4)


def test_converted_torchvision_bn_resnet18_pkl_is_the_same_network_with_frozenbn(tmp_path):
    net = torchvision.models.resnet18(weights=None)
    for m in net.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.bias, 0.0, 0.3)
    net.eval()
    cfg = make_cfg(**{"MODEL.RESNETS.DEPTH": 18, "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
                      "MODEL.RESNETS.NORM": "FrozenBN"})
    model, report = convert_and_load(net, tmp_path, cfg, suffix=".pkl")
    assert (report.arch.depth, report.arch.norm, report.missing) == (18, "FrozenBN", [])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(x), torchvision_features(net, x)
    for stage in STAGES:
        torch.testing.assert_close(ours[stage], theirs[stage], rtol=1e-4, atol=1e-4)


def test_mmdet_style_gn_names_and_containers():
    """mmdet's GN / GN+WS ImageNet weights: gn1/gn2/gn3 names, 'state_dict' + 'meta', 'module.'."""
    tv = torchvision_gn_resnet("resnext50_32x4d").state_dict()
    mm = {"module." + k.replace("bn", "gn"): v for k, v in tv.items()}
    converted, unexpected = convert_torchvision_state_dict(mm)
    reference, _ = convert_torchvision_state_dict(tv)
    assert converted.keys() == reference.keys()
    assert unexpected == ["module.fc.weight", "module.fc.bias"]
    arch = infer_resnet_arch(converted)
    assert (arch.depth, arch.num_groups, arch.width_per_group, arch.norm) == (50, 32, 4, "GN")
    assert arch.describe() == "ResNeXt-50 32x4d, GN"


def test_load_state_dict_file_unwraps_and_rejects(tmp_path):
    weights = {"conv1.weight": torch.ones(1)}
    torch.save({"state_dict": weights, "meta": {"epoch": 100}}, tmp_path / "mm.pth")
    assert load_state_dict_file(tmp_path / "mm.pth").keys() == weights.keys()
    with pytest.raises(WeightsError, match="absent.pth: no such file"):
        load_state_dict_file(tmp_path / "absent.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"\x80\x02garbage")
    with pytest.raises(WeightsError, match="corrupt.pth: not a readable torch checkpoint"):
        load_state_dict_file(tmp_path / "corrupt.pth")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match=r"list.pth: expected a state dict .* got list"):
        load_state_dict_file(tmp_path / "list.pth")


def test_non_resnet_input_and_bad_output_suffix(tmp_path):
    torch.save({"encoder.weight": torch.ones(2)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="other.pth: not a torchvision-naming ResNet"):
        convert_torchvision_file(tmp_path / "other.pth", tmp_path / "out.pth")
    with pytest.raises(WeightsError, match=r"out.bin: output must end in .pth or .pkl"):
        save_d2_weights({}, tmp_path / "out.bin", AUTHOR)


def test_report_lists_missing_and_unexpected(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer2.0.downsample.0.weight"]
    state["layer1.0.extra.weight"] = torch.ones(1)
    torch.save(state, tmp_path / "r18.pth")
    report = convert_torchvision_file(tmp_path / "r18.pth", tmp_path / "r18_d2.pth")
    assert report.missing == ["res3.0.shortcut.weight"]
    assert report.unexpected == ["fc.weight", "fc.bias", "layer1.0.extra.weight"]
    lines = report.lines()
    assert lines[0].startswith("ResNet-18, BN: ")
    assert lines[1] == "missing (backbone keys not in the input): 1: res3.0.shortcut.weight"
