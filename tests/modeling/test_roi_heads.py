"""gn_det.modeling.roi_heads: GN / GN+WS box (4conv1fc) and mask heads on detectron2's heads."""
import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, MaskRCNNConvUpsampleHead
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from gn_det.config import add_gn_det_config
from gn_det.layers import WSConv2d
from gn_det.modeling.roi_heads import GNFastRCNNConvFCHead, GNMaskRCNNConvUpsampleHead

BOX_IN = ShapeSpec(channels=64, height=7, width=7)
MASK_IN = ShapeSpec(channels=64, height=14, width=14)


def _box_head(**kwargs):
    return GNFastRCNNConvFCHead(BOX_IN, conv_dims=[64] * 4, fc_dims=[128], **kwargs)


def _mask_head(**kwargs):
    return GNMaskRCNNConvUpsampleHead(MASK_IN, num_classes=3, conv_dims=[64] * 5, loss_weight=1.0,
                                      vis_period=0, **kwargs)


@pytest.mark.parametrize("ws", [False, True])
def test_box_head_4conv1fc(ws):
    head = _box_head(norm="GN", ws=ws)
    convs = [head.conv1, head.conv2, head.conv3, head.conv4]
    assert head.conv_norm_relus == convs
    assert all(isinstance(c, WSConv2d) == ws and type(c.norm) is nn.GroupNorm for c in convs)
    assert all(c.bias is None and c.norm.num_groups == 32 for c in convs)
    assert type(head.fc1) is nn.Linear and not hasattr(head, "fc2")
    out = head(torch.randn(5, 64, 7, 7))
    assert out.shape == (5, 128) and head.output_shape.channels == 128
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("ws", [False, True])
def test_mask_head(ws):
    head = _mask_head(norm="GN", ws=ws)
    convs = [getattr(head, f"mask_fcn{k}") for k in range(1, 5)]
    assert head.conv_norm_relus == convs
    assert all(isinstance(c, WSConv2d) == ws and type(c.norm) is nn.GroupNorm for c in convs)
    assert type(head.predictor) is not WSConv2d and head.predictor.weight.std() < 0.002
    assert isinstance(head.deconv, nn.ConvTranspose2d)
    assert head.layers(torch.randn(2, 64, 14, 14)).shape == (2, 3, 28, 28)


def test_layouts_load_detectron2_checkpoints():
    theirs = FastRCNNConvFCHead(BOX_IN, conv_dims=[64] * 4, fc_dims=[128], conv_norm="GN")
    ours = _box_head(norm="GN", ws=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs = MaskRCNNConvUpsampleHead(MASK_IN, num_classes=3, conv_dims=[64] * 5, conv_norm="GN")
    ours = _mask_head(norm="GN")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 64, 14, 14)
    assert torch.equal(ours.layers(x), theirs.layers(x))


def test_invalid_settings_name_the_layer():
    with pytest.raises(ValueError, match=r"layer roi_heads.box_head.conv: GN with G=32 groups "
                                         r"needs C=48 divisible by G"):
        GNFastRCNNConvFCHead(BOX_IN, conv_dims=[48] * 4, fc_dims=[128], norm="GN")
    with pytest.raises(ValueError, match=r"layer roi_heads.mask_head.mask_fcn: SyncBN needs"):
        _mask_head(norm="SyncBN")


def _cfg(*opts):
    cfg = add_gn_det_config(get_cfg())
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.MASK_ON", True,
        "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",  # detectron2's own
        "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
        "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"], "MODEL.FPN.OUT_CHANNELS", 64,
        "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]],
        "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"],
        "MODEL.ROI_HEADS.NAME", "StandardROIHeads", "MODEL.ROI_HEADS.NUM_CLASSES", 3,
        "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "MODEL.ROI_BOX_HEAD.NAME", "GNFastRCNNConvFCHead", "MODEL.ROI_BOX_HEAD.NUM_CONV", 4,
        "MODEL.ROI_BOX_HEAD.NUM_FC", 1, "MODEL.ROI_BOX_HEAD.CONV_DIM", 64,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 128, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7,
        "MODEL.ROI_MASK_HEAD.NAME", "GNMaskRCNNConvUpsampleHead",
        "MODEL.ROI_MASK_HEAD.CONV_DIM", 64,
        "MODEL.ROI_MASK_HEAD.NUM_CONV", 4,
        "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14, *opts])
    return cfg


def _batch():
    batch = []
    for boxes in ([[10, 12, 60, 70], [70, 40, 120, 90]], [[30, 30, 90, 80]]):
        inst = Instances((96, 128))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.arange(len(boxes)) % 3
        masks = torch.zeros(len(boxes), 96, 128, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes):
            m[y0:y1, x0:x1] = True
        inst.gt_masks = BitMasks(masks)
        batch.append({"image": torch.rand(3, 96, 128) * 255, "instances": inst})
    return batch


def test_mask_rcnn_from_config_trains():
    # detectron2's own keys select GN; gn_det's per-component key adds WS to the box head only
    cfg = _cfg("MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_MASK_HEAD.NORM", "GN",
               "MODEL.NORMS.BOX_HEAD.WS", True)
    model = build_model(cfg)
    box_head, mask_head = model.roi_heads.box_head, model.roi_heads.mask_head
    assert isinstance(box_head, GNFastRCNNConvFCHead) and isinstance(box_head.conv1, WSConv2d)
    assert isinstance(mask_head, GNMaskRCNNConvUpsampleHead)
    assert type(mask_head.mask_fcn1) is not WSConv2d
    assert type(mask_head.mask_fcn1.norm) is nn.GroupNorm
    with EventStorage():
        losses = model(_batch())
    assert {"loss_cls", "loss_box_reg", "loss_mask"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for head in (box_head, mask_head):
        assert all(p.grad is not None for p in head.parameters())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 96, 128) * 255}])
    assert isinstance(out[0]["instances"], Instances)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"^MODEL.NORMS.MASK_HEAD: .*both set"):
        build_model(_cfg("MODEL.NORMS.MASK_HEAD.TYPE", "GN", "MODEL.NORMS.MASK_HEAD.NUM_GROUPS", 16,
                         "MODEL.NORMS.MASK_HEAD.CHANNELS_PER_GROUP", 4))
