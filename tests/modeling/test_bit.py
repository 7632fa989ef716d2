"""gn_det.modeling.bit: timm's BiT ResNetV2 family as detectron2 backbones, proven equal to timm
(same names and shapes at every depth and width; same features from the same saved weights)."""
from functools import partial

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import GroupNormAct, StdConv2d
from timm.models import FeatureListNet
from timm.models.resnetv2 import ResNetV2
from torch import nn

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone
from gn_det.config import load_cfg
from gn_det.checkpoint import AtomicCheckpointer
from gn_det.layers import WSConv2d
from gn_det.modeling.bit import TIMM_MODELS, BiTResNet, make_bit
from gn_det.checkpoint.bit_weights import convert_timm_state_dict
from gn_det.model_zoo import get_config_file

STAGES = ["res2", "res3", "res4", "res5"]
TOL = 1e-4


def bit_cfg(*opts):
    return load_cfg("", ["MODEL.BACKBONE.NAME", "build_gn_bit_backbone",
                         "MODEL.NORMS.BACKBONE.TYPE", "GN", "MODEL.NORMS.BACKBONE.WS", "True",
                         "MODEL.BACKBONE.FREEZE_AT", "0", *map(str, opts)])


def randomized(model):
    """Random weights added everywhere (GN affine too, which timm initializes to 1 / 0), eval."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", list(TIMM_MODELS))
def test_every_timm_bit_model_has_our_names_shapes_and_parameter_count(name):
    depth, width = TIMM_MODELS[name]
    theirs = timm.create_model(name, pretrained=False, device="meta")
    converted, unused = convert_timm_state_dict(theirs.state_dict())
    assert unused == ["head.fc.weight", "head.fc.bias"]
    with torch.device("meta"):
        ours = build_backbone(bit_cfg("MODEL.BIT.DEPTH", depth, "MODEL.BIT.WIDTH_FACTOR", width))
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in converted.items()}
    backbone = sum(p.numel() for n, p in theirs.named_parameters() if not n.startswith("head."))
    assert sum(p.numel() for p in ours.parameters()) == backbone
    assert ours.output_shape() == {
        f"res{i + 2}": ShapeSpec(channels=256 * width * 2 ** i, stride=4 * 2 ** i)
        for i in range(4)}
    assert all(isinstance(m, WSConv2d) and m.ws_eps == 1e-8 for m in ours.modules()
               if isinstance(m, nn.Conv2d))
    assert all(m.num_groups == 32 for m in ours.modules() if isinstance(m, nn.GroupNorm))


def random_timm(name):
    """timm's model with random weights in one pass (GN affine too, which timm initializes to
    1 / 0): built on the meta device, then filled, which skips timm's slower init."""
    model = timm.create_model(name, pretrained=False, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(1.0 if p.ndim == 1 and "weight" in _name_of(model, p) else 0.0, 0.1)
    return model.eval()


def _name_of(model, param):
    return next(n for n, p in model.named_parameters() if p is param)


def ours_loaded(path, *opts):
    """Our BiT backbone from a config, built on the meta device, filled by MODEL.WEIGHTS'
    loader (AtomicCheckpointer: timm file detected, converted, checked)."""
    with torch.device("meta"):
        ours = build_backbone(bit_cfg(*opts))
    ours.to_empty(device="cpu")
    AtomicCheckpointer(ours).load(str(path))
    return ours.eval()


@pytest.mark.parametrize("name,suffix,size", [("resnetv2_50x1_bit", ".pth", 64),
                                              ("resnetv2_50x3_bit", ".safetensors", 32)])
def test_same_features_as_timm_from_the_same_file(name, suffix, size, tmp_path):
    """res2-res4 = timm's features_only outputs, res5 = its forward_features (final norm), or its
    features_only output with MODEL.BIT.FINAL_NORM False; timm's file, saved as timm saves it."""
    depth, width = TIMM_MODELS[name]
    theirs = random_timm(name)
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(theirs.state_dict(), str(path))
    else:
        torch.save(theirs.state_dict(), path)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        final = theirs.forward_features(x)
    if width == 1:  # timm's own loader reads the file into its features_only model
        theirs = timm.create_model(name, pretrained=True, features_only=True,
                                   out_indices=(1, 2, 3, 4),
                                   pretrained_cfg_overlay=dict(file=str(path), custom_load=False))
    else:  # what features_only=True builds, over the model that wrote the file (no 2nd copy)
        theirs = FeatureListNet(theirs, out_indices=(1, 2, 3, 4), flatten_sequential=True)
    with torch.no_grad():
        features = theirs.eval()(x)
    del theirs
    for final_norm in (True, False) if width == 1 else (True,):
        ours = ours_loaded(path, "MODEL.BIT.DEPTH", depth, "MODEL.BIT.WIDTH_FACTOR", width,
                           "MODEL.BIT.FINAL_NORM", final_norm)
        with torch.no_grad():
            out = ours(x)
        for stage, feature in zip(STAGES[:3], features[:3]):  # un-normalized, as timm's
            assert (out[stage] - feature).abs().max() < TOL, stage
        if final_norm:
            assert (out["res5"] - final).abs().max() < TOL
        else:
            assert ours.final_norm is None
            assert (out["res5"] - features[3]).abs().max() < TOL
        del ours


def test_custom_depth_is_timms_resnetv2_with_the_same_arguments(tmp_path):
    """The toy config's BiT is the network timm's ResNetV2 class builds with its depths/widths."""
    theirs = randomized(ResNetV2(layers=[1, 1, 1, 1], channels=(128, 256, 512, 1024),
                                 stem_chs=32, stem_type="fixed", num_classes=4,
                                 conv_layer=partial(StdConv2d, eps=1e-8),
                                 norm_layer=partial(GroupNormAct, num_groups=8)))
    torch.save(theirs.state_dict(), tmp_path / "toy.pth")
    cfg = load_cfg(get_config_file("toy/retinanet_BiT_toy_shapes.yaml"),
                   ["MODEL.BIT.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']"])
    ours = make_bit(cfg, ShapeSpec(channels=3)).eval()
    AtomicCheckpointer(ours).load(str(tmp_path / "toy.pth"))
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        out = ours(x)
        stages = theirs.forward_intermediates(x, intermediates_only=True)[1:]
        final = theirs.forward_features(x)
    for stage, feature in zip(STAGES[:3], stages):
        assert (out[stage] - feature).abs().max() < TOL, stage
    assert (out["res5"] - final).abs().max() < TOL


def test_timm_bn_resnetv2_with_bn_and_the_plain_stem():
    """The norm switch and STEM_TYPE '' reproduce timm's BN pre-activation resnetv2_50."""
    theirs = randomized(timm.create_model("resnetv2_50", pretrained=False))
    with torch.no_grad():
        for name, buf in theirs.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    cfg = bit_cfg("MODEL.NORMS.BACKBONE.TYPE", "BN", "MODEL.NORMS.BACKBONE.WS", "False",
                  "MODEL.BIT.STEM_TYPE", "")
    ours = build_backbone(cfg).eval()
    converted, _ = convert_timm_state_dict(theirs.state_dict())
    ours.load_state_dict(converted, strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x)["res5"] - theirs.forward_features(x)).abs().max() < TOL
    assert not any(isinstance(m, WSConv2d) for m in ours.modules())


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 5])
def test_freeze_at_has_detectron2s_meaning(freeze_at):
    ours = build_backbone(bit_cfg("MODEL.BIT.DEPTH", 0, "MODEL.BIT.BLOCKS_PER_STAGE",
                                  "[1, 1, 1, 1]", "MODEL.BIT.STEM_OUT_CHANNELS", 32,
                                  "MODEL.BIT.RES2_OUT_CHANNELS", 128, "MODEL.NORMS.BACKBONE.TYPE",
                                  "BN", "MODEL.BACKBONE.FREEZE_AT", freeze_at))
    frozen = ["stem", "res2", "res3", "res4", "res5"][:freeze_at]
    for name, p in ours.named_parameters():
        part = "res5" if name.startswith("final_norm") else name.split(".")[0]
        assert p.requires_grad == (part not in frozen), name
    for name, m in ours.named_modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            part = "res5" if name.startswith("final_norm") else name.split(".")[0]
            assert isinstance(m, FrozenBatchNorm2d) == (part in frozen), name


def test_norm_switch_and_outputs():
    ours = build_backbone(bit_cfg("MODEL.NORMS.BACKBONE.TYPE", "none",
                                  "MODEL.NORMS.BACKBONE.WS", "False",
                                  "MODEL.BIT.OUT_FEATURES", "['stem', 'res4']"))
    assert isinstance(ours, BiTResNet) and ours.stage_names == ("res2", "res3", "res4")
    assert ours.final_norm is None and not hasattr(ours, "res5")
    assert not any(isinstance(m, (nn.GroupNorm, WSConv2d)) for m in ours.modules())
    out = ours(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"stem": (1, 64, 16, 16),
                                                           "res4": (1, 1024, 4, 4)}


@pytest.mark.parametrize("name,expected", [
    ("build_gn_bit_fpn_backbone", {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}),
    ("build_gn_retinanet_bit_fpn_backbone", {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}),
])
def test_fpn_variants(name, expected):
    features = ["res2", "res3", "res4", "res5"] if "p2" in expected else ["res3", "res4", "res5"]
    cfg = bit_cfg("MODEL.BACKBONE.NAME", name, "MODEL.FPN.IN_FEATURES", str(features),
                  "MODEL.NORMS.FPN.TYPE", "GN", "MODEL.FPN.OUT_CHANNELS", 64,
                  "MODEL.BIT.DEPTH", 0, "MODEL.BIT.BLOCKS_PER_STAGE", "[1, 1, 1, 1]",
                  "MODEL.BIT.STEM_OUT_CHANNELS", 32, "MODEL.BIT.RES2_OUT_CHANNELS", 128,
                  "MODEL.NORMS.BACKBONE.NUM_GROUPS", 8)
    fpn = build_backbone(cfg)
    assert isinstance(fpn.bottom_up, BiTResNet)
    assert {k: s.stride for k, s in fpn.output_shape().items()} == expected
    assert isinstance(fpn.fpn_lateral5.norm, nn.GroupNorm)
    out = fpn(torch.randn(1, 3, 128, 128))
    assert {k: v.shape[-1] for k, v in out.items()} == {k: 128 // s for k, s in expected.items()}
    if "p7" in expected:  # P6 from the final-normed res5 (2048 / 2 x 1024 channels here)
        assert fpn.top_block.p6.in_channels == 1024


@pytest.mark.parametrize("opts,message", [
    (["MODEL.BIT.DEPTH", 34], r"^MODEL.BIT.DEPTH=34 is not a BiT depth; valid: 50, 101, 152"),
    (["MODEL.BIT.DEPTH", 0], r"^MODEL.BIT.BLOCKS_PER_STAGE=\[\]: MODEL.BIT.DEPTH 0 needs 4"),
    (["MODEL.BIT.BLOCKS_PER_STAGE", "[1, 1, 1, 1]"], r"^MODEL.BIT.BLOCKS_PER_STAGE=.*contradicts"),
    (["MODEL.BIT.WIDTH_FACTOR", 0], r"^MODEL.BIT.WIDTH_FACTOR=0; expected a positive integer"),
    (["MODEL.BIT.STEM_OUT_CHANNELS", 20], r"^MODEL.BIT.STEM_OUT_CHANNELS=20: .*multiple of 8"),
    (["MODEL.BIT.RES2_OUT_CHANNELS", 100], r"^MODEL.BIT.RES2_OUT_CHANNELS=100: .*multiple of 32"),
    (["MODEL.BIT.STEM_TYPE", "deep"], r"^MODEL.BIT.STEM_TYPE='deep'; valid: 'fixed'"),
    (["MODEL.BIT.OUT_FEATURES", "['res6']"], r"^MODEL.BIT.OUT_FEATURES=\['res6'\]; valid names"),
    (["MODEL.BIT.WS_EPS", -1.0], r"^MODEL.BIT.WS_EPS=-1.0; expected >= 0"),
    (["MODEL.NORMS.BACKBONE.NUM_GROUPS", 24],
     r"^layer backbone.res2.0.norm1: GN with G=24 groups needs C=64"),
    (["MODEL.BACKBONE.NAME", "build_gn_retinanet_bit_fpn_backbone",
      "MODEL.BIT.OUT_FEATURES", "['res3', 'res4']", "MODEL.FPN.IN_FEATURES", "['res3', 'res4']"],
     r"^MODEL.BIT.OUT_FEATURES=\['res3', 'res4'\]: the RetinaNet FPN computes P6/P7 from res5"),
    (["MODEL.BACKBONE.NAME", "build_gn_bit_fpn_backbone", "MODEL.FPN.IN_FEATURES", "['res1']"],
     r"^MODEL.FPN.IN_FEATURES=\['res1'\]: .* \(MODEL.BIT.OUT_FEATURES\)"),
])
def test_bad_settings_are_one_line_naming_the_key(opts, message):
    with pytest.raises(ValueError, match=message) as info:
        with torch.device("meta"):
            build_backbone(bit_cfg(*opts))
    assert "\n" not in str(info.value)


def test_ws_eps_zero_falls_back_to_the_shared_key():
    cfg = bit_cfg("MODEL.BIT.WS_EPS", 0.0, "MODEL.NORMS.WS.EPS", 1e-5)
    with torch.device("meta"):
        ours = build_backbone(cfg)
    assert {m.ws_eps for m in ours.modules() if isinstance(m, WSConv2d)} == {1e-5}


def test_toy_config_trains_a_few_iterations(tiny_shapes, tmp_path):
    from cli_harness import TINY_MODEL_OPTS, tiny_dataset_opts

    from gn_det.data import register_datasets_from_cfg
    from gn_det.engine import Trainer

    cfg = load_cfg(get_config_file("toy/retinanet_BiT_toy_shapes.yaml"), [
        *tiny_dataset_opts(tiny_shapes, "bit_toy"), *TINY_MODEL_OPTS,
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", str(tmp_path)])
    register_datasets_from_cfg(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    before = {k: v.clone() for k, v in trainer.model.backbone.bottom_up.state_dict().items()}
    trainer.train()
    after = trainer.model.backbone.bottom_up.state_dict()
    assert trainer.iter == 3 and any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "inference" / "bit_toy_val" / "metrics.json").is_file()
