"""gn_det.modeling.retinanet: the per-component-norm RetinaNet head and the GNRetinaNet
meta-arch."""
import inspect
import math

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import CycleBatchNormList, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from gn_det.config import add_gn_det_config
from gn_det.layers import NormSpec, WSConv2d
from gn_det.modeling.retinanet import GNRetinaNet, GNRetinaNetHead

LEVELS = 5
SHAPES = [ShapeSpec(channels=64, stride=2 ** (3 + i)) for i in range(LEVELS)]


def _head(**kwargs):
    return GNRetinaNetHead(input_shape=SHAPES, num_classes=3, num_anchors=9, conv_dims=[64] * 4,
                           **kwargs)


def _features(batch=2, size=32):
    return [torch.randn(batch, 64, size >> i, size >> i) + i for i in range(LEVELS)]


def _subnet_parts(head):
    convs = [m for m in head.cls_subnet if isinstance(m, nn.Conv2d)]
    norms = [m for m in head.cls_subnet if not isinstance(m, (nn.Conv2d, nn.ReLU))]
    return convs, norms


# detectron2 v0.6 probes the norm with get_norm(norm, 1); main probes with 32 channels.
PROBES_ONE_CHANNEL = "get_norm(norm, 1)" in inspect.getsource(RetinaNetHead.__init__)


@pytest.mark.skipif(not PROBES_ONE_CHANNEL, reason="this detectron2's head has no 1-channel probe")
def test_detectron2_head_crashes_on_gn_and_ours_builds():
    kwargs = dict(input_shape=SHAPES, num_classes=3, num_anchors=9, conv_dims=[64] * 4)
    with pytest.raises(ValueError, match=r"num_channels \(1\) must be divisible by num_groups"):
        RetinaNetHead(norm="GN", **kwargs)  # detectron2 issue 4369
    logits, deltas = GNRetinaNetHead(norm="GN", **kwargs)(_features())
    assert [t.shape[1] for t in logits] == [27] * LEVELS and deltas[0].shape[1] == 36


@pytest.mark.parametrize("norm,ws", [("", False), ("GN", False), ("GN", True), ("LN_CHW", False)])
def test_per_sample_norms_shared_across_levels(norm, ws):
    head = _head(norm=norm, ws=ws)
    convs, norms = _subnet_parts(head)
    assert len(convs) == 4 and all(isinstance(c, WSConv2d) == ws for c in convs)
    assert all(type(n) is nn.GroupNorm for n in norms) and len(norms) == (4 if norm else 0)
    if norm == "GN":
        assert norms[0].num_groups == 32
    # the predictors stay plain convs, biased, with detectron2's init
    for final in (head.cls_score, head.bbox_pred):
        assert type(final) is nn.Conv2d and final.bias is not None
    assert torch.allclose(head.cls_score.bias, torch.tensor(-math.log(99.0)))
    assert head.bbox_pred.bias.abs().max() == 0
    assert abs(head.cls_score.weight.std().item() - 0.01) < 2e-3
    assert all((c.bias is None) == bool(norm) for c in convs)  # no conv bias before a norm


def test_batchnorm_gets_statistics_per_level():
    head = _head(norm="BN").train()
    _, norms = _subnet_parts(head)
    assert all(isinstance(n, CycleBatchNormList) and len(n) == LEVELS for n in norms)
    assert all(type(bn) is nn.BatchNorm2d and not bn.affine for bn in norms[0])
    assert norms[0].weight.shape == (64,)  # one affine, shared by the levels
    feats = _features()
    head(feats)
    # each level's BN saw that level's conv output only (momentum 0.1 from a zero running mean)
    with torch.no_grad():
        for level, bn in enumerate(norms[0]):
            batch_mean = head.cls_subnet[0](feats[level]).mean(dim=(0, 2, 3))
            assert torch.allclose(bn.running_mean, 0.1 * batch_mean, atol=1e-6)
    norms[0]._pos = 3  # as if a previous call had been interrupted: the next one still starts at 0
    head(feats)
    assert [int(bn.num_batches_tracked) for bn in norms[0]] == [2] * LEVELS
    head.eval()
    logits, _ = head(feats)
    assert all(torch.isfinite(t).all() for t in logits)


def test_frozen_bn_is_shared():
    _, norms = _subnet_parts(_head(norm="FrozenBN"))
    assert all(type(n) is FrozenBatchNorm2d for n in norms)


def test_wrong_number_of_levels():
    with pytest.raises(ValueError, match="built for 5 levels, got 4 feature maps"):
        _head()(_features()[:4])


def test_layout_loads_detectron2_checkpoints():
    kwargs = dict(input_shape=SHAPES, num_classes=3, num_anchors=9, conv_dims=[64] * 4)
    theirs = RetinaNetHead(norm="", **kwargs)
    ours = GNRetinaNetHead(norm="", **kwargs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats = _features()
    for a, b in zip(theirs(feats)[0], ours(feats)[0]):
        assert torch.equal(a, b)
    # with a norm, only the (redundant) conv biases before the norm are absent
    gn_keys = set(_head(norm="GN").state_dict())
    assert {k for k in gn_keys if "subnet.1." in k} == {"cls_subnet.1.weight", "cls_subnet.1.bias",
                                                       "bbox_subnet.1.weight", "bbox_subnet.1.bias"}


def test_invalid_settings_fail_at_build_naming_the_layer():
    with pytest.raises(ValueError,
                       match=r"layer head.cls_subnet.1: SyncBN needs a torch.distributed"):
        _head(norm="SyncBN")
    with pytest.raises(ValueError,
                       match=r"layer head.cls_subnet.1: GN with G=48 groups needs C=64"):
        _head(norm=NormSpec("GN", num_groups=48))
    with pytest.raises(ValueError, match=r"unknown norm type 'group'"):
        _head(norm="group")


def _cfg(*opts):
    cfg = add_gn_det_config(get_cfg())
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
        "MODEL.META_ARCHITECTURE", "GNRetinaNet",
        "MODEL.BACKBONE.NAME", "build_retinanet_resnet_fpn_backbone",  # detectron2's own
        "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.RESNETS.OUT_FEATURES", ["res3", "res4", "res5"],
        "MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"], "MODEL.FPN.OUT_CHANNELS", 64,
        "MODEL.RETINANET.NUM_CLASSES", 3, *opts])
    return cfg


def _batch():
    batch = []
    for boxes in ([[10, 12, 60, 70], [70, 40, 120, 110]], [[30, 30, 90, 100]]):
        inst = Instances((96, 128))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.arange(len(boxes)) % 3
        batch.append({"image": torch.rand(3, 96, 128) * 255, "instances": inst})
    return batch


def test_stock_retinanet_crashes_where_gnretinanet_trains():
    cfg = _cfg("MODEL.RETINANET.NORM", "GN")  # detectron2's own key, inherited by our head
    if PROBES_ONE_CHANNEL:
        stock = cfg.clone()
        stock.MODEL.META_ARCHITECTURE = "RetinaNet"
        with pytest.raises(ValueError, match=r"num_channels \(1\)"):
            build_model(stock)
    model = build_model(cfg)
    assert type(model) is GNRetinaNet and isinstance(model.head, GNRetinaNetHead)
    assert type(model.head.cls_subnet[1]) is nn.GroupNorm
    with EventStorage():
        losses = model(_batch())
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.head.parameters())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 96, 128) * 255, "height": 48, "width": 64}])
    assert isinstance(out[0]["instances"], Instances) and out[0]["instances"].image_size == (48, 64)


def test_config_override_wins_over_detectron2_key():
    cfg = _cfg("MODEL.RETINANET.NORM", "GN", "MODEL.NORMS.RETINANET_HEAD.TYPE", "BN",
               "MODEL.NORMS.RETINANET_HEAD.WS", True)
    head = build_model(cfg).head
    convs, norms = _subnet_parts(head)
    assert all(isinstance(c, WSConv2d) for c in convs)
    assert all(isinstance(n, CycleBatchNormList) for n in norms)
    with pytest.raises(ValueError, match=r"^MODEL.NORMS.RETINANET_HEAD.TYPE: unknown norm type"):
        build_model(_cfg("MODEL.NORMS.RETINANET_HEAD.TYPE", "GroupNorm"))
