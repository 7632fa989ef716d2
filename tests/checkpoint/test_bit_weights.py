"""gn_det.checkpoint.bit_weights: timm ResNetV2 / BiT files load strictly into a model's BiT
backbone (bare, under FPN, in a detector; raw timm files and convert_weights outputs alike), and
files of another network are refused in one line naming the keys."""
import logging

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from detectron2.modeling import build_backbone, build_model
from gn_det.config import load_cfg
from gn_det.checkpoint import AtomicCheckpointer, CheckpointError
from gn_det.modeling.bit import TIMM_MODELS
from gn_det.checkpoint import convert_weights_file
from gn_det.checkpoint.bit_weights import (AUTHOR, convert_timm_state_dict, infer_bit_arch,
                                           is_timm_resnetv2, rename_timm_key)
from gn_det.checkpoint.resnet_weights import convert_torchvision_file
from gn_det.checkpoint.weights_file import load_state_dict_file
from gn_det.model_zoo import get_config_file

TOY = "toy/retinanet_BiT_toy_shapes.yaml"
TOY_BACKBONE = ["MODEL.BIT.DEPTH", "0", "MODEL.BIT.BLOCKS_PER_STAGE", "[1, 1, 1, 1]",
                "MODEL.BIT.STEM_OUT_CHANNELS", "32", "MODEL.BIT.RES2_OUT_CHANNELS", "128",
                "MODEL.NORMS.BACKBONE.NUM_GROUPS", "8"]


def bit_backbone(*opts):
    return build_backbone(load_cfg("", [
        "MODEL.BACKBONE.NAME", "build_gn_bit_backbone", "MODEL.NORMS.BACKBONE.TYPE", "GN",
        "MODEL.NORMS.BACKBONE.WS", "True", "MODEL.BACKBONE.FREEZE_AT", "0", *map(str, opts)]))


def toy_timm_state(num_classes=4):
    """A genuine timm ResNetV2 state dict of the toy config's network, random weights."""
    from functools import partial

    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    model = ResNetV2(layers=[1, 1, 1, 1], channels=(128, 256, 512, 1024), stem_chs=32,
                     stem_type="fixed", num_classes=num_classes,
                     conv_layer=partial(StdConv2d, eps=1e-8),
                     norm_layer=partial(GroupNormAct, num_groups=8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    model = toy_timm_state()
    path = tmp_path_factory.mktemp("bit") / "toy.pth"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.mark.parametrize("key,expected", [
    ("stem.conv.weight", "stem.conv.weight"),
    ("stages.0.blocks.0.downsample.conv.weight", "res2.0.shortcut.weight"),
    ("stages.2.blocks.22.norm3.bias", "res4.22.norm3.bias"),
    ("stages.3.blocks.1.conv2.weight", "res5.1.conv2.weight"),
    ("norm.weight", "final_norm.weight"),
    ("head.fc.weight", None), ("stages.4.blocks.0.conv1.weight", None),
    ("stages.0.blocks.0.downsample.norm.weight", None),
])
def test_rename_timm_key(key, expected):
    assert rename_timm_key(key) == expected


def test_timm_names_are_told_apart_from_torchvision_and_detectron2():
    assert is_timm_resnetv2(timm.create_model("resnetv2_50x1_bit", device="meta").state_dict())
    assert is_timm_resnetv2({"module.stem.conv.weight": 0, "module.stages.0.blocks.0.conv1.w": 0})
    assert not is_timm_resnetv2(torchvision.models.resnet18(weights=None).state_dict())
    assert not is_timm_resnetv2({"stem.conv1.weight": 0, "res2.0.conv1.weight": 0})


@pytest.mark.parametrize("name", list(TIMM_MODELS))
def test_infer_arch_names_timms_model(name):
    converted, _ = convert_timm_state_dict(timm.create_model(name, device="meta").state_dict())
    arch = infer_bit_arch(converted)
    depth, width = TIMM_MODELS[name]
    assert arch.timm_model == name and arch.norm == "GN" and arch.final_norm
    assert arch.config_opts().startswith(f"MODEL.BIT.DEPTH {depth}, MODEL.BIT.WIDTH_FACTOR "
                                         f"{width}, MODEL.NORMS.BACKBONE {{TYPE: GN, WS: True}}")


def test_loads_into_a_detector_under_fpn_with_features_equal_to_timms(toy_file, tmp_path, caplog):
    path, theirs = toy_file
    cfg = load_cfg(get_config_file(TOY), ["MODEL.WEIGHTS", str(path)])
    model = build_model(cfg).eval()
    with caplog.at_level(logging.INFO, logger="gn_det.checkpoint.bit_weights"):
        AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    assert "not used by the BiT backbone: 2 keys: head.fc.*" in caplog.text
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        res5 = model.backbone.bottom_up(x)["res5"]
        assert (res5 - theirs.forward_features(x)).abs().max() < 1e-4
    # the same file as safetensors, and as convert_weights' output, load the same tensors
    save_file(theirs.state_dict(), str(tmp_path / "toy.safetensors"))
    report = convert_weights_file(tmp_path / "toy.safetensors", tmp_path / "converted.pth")
    assert report.missing == report.mismatched == []
    assert sorted(report.unexpected) == ["head.fc.bias", "head.fc.weight"]
    assert torch.load(tmp_path / "converted.pth", weights_only=True)["__author__"] == AUTHOR
    for other in ("toy.safetensors", "converted.pth"):
        again = build_model(cfg).eval()
        AtomicCheckpointer(again).load(str(tmp_path / other))
        for (k, a), b in zip(model.backbone.bottom_up.state_dict().items(),
                             again.backbone.bottom_up.state_dict().values()):
            assert torch.equal(a, b), (other, k)


def test_stages_not_built_and_the_final_norm_are_left_out(toy_file, caplog):
    path, _ = toy_file
    backbone = bit_backbone(*TOY_BACKBONE, "MODEL.BIT.OUT_FEATURES", "['res2', 'res3']")
    with caplog.at_level(logging.INFO, logger="gn_det.checkpoint.bit_weights"):
        AtomicCheckpointer(backbone).load(str(path))
    assert ("not used by the BiT backbone: 24 keys: res4.0.* (10), res5.0.* (10), final_norm.* "
            "(2), head.fc.* (2)") in caplog.text


@pytest.mark.parametrize("opts,words", [
    (["MODEL.BIT.BLOCKS_PER_STAGE", "[1, 2, 1, 1]"],
     ["timm ResNetV2 weights of another network than the model's BiT backbone",
      "the file lacks 9 keys: res3.1.* (9)", "MODEL.BIT.BLOCKS_PER_STAGE [1, 1, 1, 1]"]),
    (["MODEL.BIT.RES2_OUT_CHANNELS", "256"],
     ["40 tensors have another shape (file vs backbone): final_norm.bias: (1024,) vs (2048,)",
      "MODEL.BIT.RES2_OUT_CHANNELS 128"]),
    (["MODEL.NORMS.BACKBONE.TYPE", "BN"], ["the file lacks", "running_mean"]),
])
def test_another_network_is_refused_naming_the_keys(toy_file, opts, words):
    path, _ = toy_file
    backbone = bit_backbone(*TOY_BACKBONE, *opts)
    with pytest.raises(CheckpointError) as info:
        AtomicCheckpointer(backbone).load(str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"MODEL.WEIGHTS {path}: ")
    for w in words:
        assert w in message


def test_another_depth_of_bit_is_refused(tmp_path):
    """A BiT-50x1 file into a BiT-101x1 backbone: res4.6-res4.22 named as missing."""
    state = timm.create_model("resnetv2_50x1_bit", pretrained=False).state_dict()
    torch.save(state, tmp_path / "bit50.pth")
    with torch.device("meta"):
        backbone = bit_backbone("MODEL.BIT.DEPTH", 101)
    backbone.to_empty(device="cpu")
    with pytest.raises(CheckpointError, match=r"the file lacks 153 keys: res4\.\* \(153\) .*"
                       r"the file is BiT ResNetV2-50x1 \(timm resnetv2_50x1_bit\), GN: "
                       r"MODEL.BIT.DEPTH 50, MODEL.BIT.WIDTH_FACTOR 1"):
        AtomicCheckpointer(backbone).load(str(tmp_path / "bit50.pth"))


def test_bn_resnets_are_refused_raw_or_converted(tmp_path):
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    backbone = bit_backbone()
    with pytest.raises(CheckpointError, match=r"none of its 320 tensors fits the model .*"
                       r"unexpected 320 keys: layer3.\* \(114\)"):
        AtomicCheckpointer(backbone).load(str(tmp_path / "r50.pth"))
    convert_torchvision_file(tmp_path / "r50.pth", tmp_path / "R-50.pth")  # name-matched weights
    with pytest.raises(CheckpointError, match=r"holds backbone weights of another network "
                       r"\(gn_det convert_weights \(torchvision naming\)\), which a BiT backbone "
                       r"does not take"):
        AtomicCheckpointer(backbone).load(str(tmp_path / "R-50.pth"))


def test_timm_weights_need_a_bit_backbone(toy_file):
    path, _ = toy_file
    resnet = build_backbone(load_cfg("", ["MODEL.BACKBONE.NAME", "build_gn_resnet_backbone"]))
    with pytest.raises(CheckpointError, match=r"holds timm ResNetV2 \(BiT\) weights, but the "
                       r"model has no BiT backbones; load them with MODEL.BACKBONE.NAME"):
        AtomicCheckpointer(resnet).load(str(path))


def test_plain_convs_with_bit_weights_warn(toy_file, caplog):
    path, _ = toy_file
    backbone = bit_backbone(*TOY_BACKBONE, "MODEL.NORMS.BACKBONE.WS", "False")
    with caplog.at_level(logging.WARNING, logger="gn_det.checkpoint.bit_weights"):
        AtomicCheckpointer(backbone).load(str(path))
    assert "trained with Weight Standardization, but 17 backbone convs are plain" in caplog.text


def test_safetensors_and_bin_files_read_as_state_dicts(toy_file, tmp_path):
    _, theirs = toy_file
    state = theirs.state_dict()
    save_file(state, str(tmp_path / "model.safetensors"))
    torch.save(state, tmp_path / "pytorch_model.bin")
    for name in ("model.safetensors", "pytorch_model.bin"):
        loaded = load_state_dict_file(tmp_path / name)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k])
                                                     for k in state)
