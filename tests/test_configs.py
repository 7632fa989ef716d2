"""configs/: every YAML loads with safe YAML, builds, trains a step and predicts on CPU, and each
preset puts the norm and WS its name says into every component; the CPU configs for real data
(configs/real/) train and evaluate on another COCO-format dataset when only the dataset changes."""

import pytest
import torch
import yaml
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import CycleBatchNormList, FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from gn_det.config import add_gn_det_config, merge_config_file
from gn_det.layers import WSConv2d
from gn_det.modeling.bit import BiTResNet, PreActBottleneck

from helpers import REPO, process_group_of_one

CONFIGS = REPO / "configs"
H, W = 64, 96  # small images keep 13 R-50 train steps on 2 shared CPU cores to about a minute
ALL_CONFIGS = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")
                     if not p.name.startswith("Base-"))
MODEL_CONFIGS = [n for n in ALL_CONFIGS if not n.startswith("toy/")]  # toy/: the lead's
SYNCBN = "RetinaNet/retinanet_R_50_FPN_1x_syncbn_all.yaml"

NONE, GN, BN, SYNC, FROZEN = None, nn.GroupNorm, nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d
# component -> (norm class, WS) per config; BN in stages frozen by FREEZE_AT becomes FrozenBN.
_RETINA = ("BACKBONE", "FPN", "RETINANET_HEAD")
_RCNN = ("BACKBONE", "FPN", "BOX_HEAD", "MASK_HEAD")
EXPECTED = {
    "RetinaNet/retinanet_R_50_FPN_1x.yaml": dict(zip(_RETINA, [(FROZEN, 0), (NONE, 0), (NONE, 0)])),
    "RetinaNet/retinanet_R_50_FPN_1x_gn_fpn_head.yaml":
        dict(zip(_RETINA, [(FROZEN, 0), (GN, 0), (GN, 0)])),
    "RetinaNet/retinanet_R_50_FPN_1x_gn_all.yaml": dict.fromkeys(_RETINA, (GN, 0)),
    "RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml": dict.fromkeys(_RETINA, (GN, 1)),
    "RetinaNet/retinanet_R_50_FPN_1x_bn_all.yaml": dict.fromkeys(_RETINA, (BN, 0)),
    SYNCBN: dict.fromkeys(_RETINA, (SYNC, 0)),
    "RetinaNet/scratch_retinanet_R_50_FPN_3x_gn.yaml": dict.fromkeys(_RETINA, (GN, 0)),
    "RetinaNet/scratch_retinanet_R_50_FPN_3x_gnws.yaml": dict.fromkeys(_RETINA, (GN, 1)),
    "RCNN/faster_rcnn_R_50_FPN_1x_gn.yaml": dict.fromkeys(_RCNN[:3], (GN, 0)),
    "RCNN/faster_rcnn_R_50_FPN_1x_gnws.yaml": dict.fromkeys(_RCNN[:3], (GN, 1)),
    "RCNN/mask_rcnn_R_50_FPN_1x_gn.yaml": dict.fromkeys(_RCNN, (GN, 0)),
    "RCNN/mask_rcnn_R_50_FPN_1x_gnws.yaml": dict.fromkeys(_RCNN, (GN, 1)),
    "RCNN/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml": dict.fromkeys(_RCNN, (GN, 0)),
    "RCNN/scratch_mask_rcnn_R_50_FPN_3x_gnws.yaml": dict.fromkeys(_RCNN, (GN, 1)),
    "BiT/retinanet_BiT_50x1_FPN_1x.yaml": dict.fromkeys(_RETINA, (GN, 1)),
    "BiT/mask_rcnn_BiT_50x1_FPN_1x.yaml": dict.fromkeys(_RCNN, (GN, 1)),
    "real/retinanet_R_18_FPN_gnws_cpu.yaml": dict.fromkeys(_RETINA, (GN, 1)),
    "real/retinanet_R_18_FPN_gn_cpu.yaml": dict.fromkeys(_RETINA, (GN, 0)),
    "real/retinanet_R_18_FPN_bn_all_cpu.yaml": dict.fromkeys(_RETINA, (BN, 0)),
    "real/retinanet_R_18_FPN_gnws_recipe_cpu.yaml": dict.fromkeys(_RETINA, (GN, 1)),
}
# Fewer R-CNN proposals and sampled RoIs than COCO training: the 4conv box head on 1000 RoIs costs
# ~0.2 TFLOP per pass, too much for CPU tests; nothing here depends on the norm.
SMALL = ["MODEL.RPN.POST_NMS_TOPK_TRAIN", 64, "MODEL.RPN.POST_NMS_TOPK_TEST", 64,
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32]


def load(name, *opts):
    cfg = add_gn_det_config(get_cfg())
    merge_config_file(cfg, str(CONFIGS / name))  # safe YAML only
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *SMALL, *opts])
    return cfg


def _batch(cfg):
    dense = "RetinaNet" in cfg.MODEL.META_ARCHITECTURE
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES if dense else cfg.MODEL.ROI_HEADS.NUM_CLASSES
    batch = []
    for boxes in ([[4, 6, 40, 50], [44, 20, 90, 60]], [[20, 10, 70, 58]]):
        inst = Instances((H, W))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor([1, 7][:len(boxes)]) % num_classes
        if cfg.MODEL.MASK_ON:
            masks = torch.zeros(len(boxes), H, W, dtype=torch.bool)
            for m, (x0, y0, x1, y1) in zip(masks, boxes):
                m[y0:y1, x0:x1] = True
            inst.gt_masks = BitMasks(masks)
        batch.append({"image": torch.rand(3, H, W) * 255, "instances": inst})
    return batch


def _attached(module, prefix):
    """(name, conv, norm) for each conv under `module`, its norm attached (detectron2 Conv2d)."""
    return [(n, m, m.norm) for n, m in module.named_modules(prefix=prefix)
            if isinstance(m, nn.Conv2d)]


def _preactivated(bit, prefix):
    """BiT (pre-activation): (name, conv, norm) for each conv with the norm it is normalized by:
    the block's norm before it (norm1 also before the shortcut), res2.0.norm1 after the stem."""
    out = [(f"{prefix}.stem.conv", bit.stem.conv, bit.res2[0].norm1)]
    for name, block in bit.named_modules(prefix=prefix):
        if isinstance(block, PreActBottleneck):
            out += [(f"{name}.conv{i}", getattr(block, f"conv{i}"), getattr(block, f"norm{i}"))
                    for i in (1, 2, 3)]
            if block.shortcut is not None:
                out.append((f"{name}.shortcut", block.shortcut, block.norm1))
    return out


def _sequential(seq, prefix):
    """(name, conv, norm) for each conv of an nn.Sequential, its norm the layer after it."""
    layers = list(seq) + [None]
    return [(f"{prefix}.{i}", m, None if isinstance(layers[i + 1], nn.ReLU) else layers[i + 1])
            for i, m in enumerate(layers[:-1]) if isinstance(m, nn.Conv2d)]


def components(model):
    """component -> [(name, conv, norm)] of the convs that component's spec governs."""
    backbone = model.backbone
    collect = _preactivated if isinstance(backbone.bottom_up, BiTResNet) else _attached
    out = {"BACKBONE": collect(backbone.bottom_up, "backbone.bottom_up"),
           "FPN": [(n, m, m.norm) for n, m in backbone.named_children() if n.startswith("fpn_")]}
    if hasattr(model, "head"):
        out["RETINANET_HEAD"] = (_sequential(model.head.cls_subnet, "head.cls_subnet")
                                 + _sequential(model.head.bbox_subnet, "head.bbox_subnet"))
    if hasattr(model, "roi_heads"):
        box = model.roi_heads.box_head
        out["BOX_HEAD"] = [(n, m, m.norm) for n, m in box.named_children() if n.startswith("conv")]
        if model.roi_heads.mask_on:
            mask = model.roi_heads.mask_head
            out["MASK_HEAD"] = [(n, m, m.norm) for n, m in mask.named_children()
                                if n.startswith("mask_fcn")]
    return out


def assert_preset(model, cfg, expected):
    found = components(model)
    assert set(found) == set(expected), f"components built: {sorted(found)}"
    frozen = ("stem", "res2", "res3", "res4", "res5")[:cfg.MODEL.BACKBONE.FREEZE_AT]
    for component, (norm_cls, ws) in expected.items():
        assert found[component], f"{component}: no convs found"
        for name, conv, norm in found[component]:
            want = norm_cls
            if component == "BACKBONE" and norm_cls in (BN, SYNC) and \
                    name.split(".")[2] in frozen:
                want = FROZEN  # detectron2's FREEZE_AT semantics
            where = f"{component} {name}"
            assert isinstance(conv, WSConv2d) == bool(ws), f"{where}: {type(conv).__name__}"
            if want is None:
                assert norm is None, f"{where}: expected no norm, got {norm}"
            elif component == "RETINANET_HEAD" and want in (BN, SYNC):
                assert isinstance(norm, CycleBatchNormList), f"{where}: {norm}"
                levels = len(cfg.MODEL.RETINANET.IN_FEATURES)
                assert len(norm) == levels and all(type(m) is want for m in norm), where
            else:
                assert type(norm) is want, f"{where}: expected {want.__name__}, got {norm}"
    if hasattr(model, "head"):  # the predictors stay plain
        assert type(model.head.cls_score) is nn.Conv2d and type(model.head.bbox_pred) is nn.Conv2d


def test_every_config_is_listed_and_safe_yaml():
    assert sorted(EXPECTED) == MODEL_CONFIGS
    for path in CONFIGS.rglob("*.yaml"):
        yaml.safe_load(path.read_text())  # no python tags anywhere


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL_CONFIGS if n != SYNCBN])
def test_config_builds_trains_and_predicts(name):
    cfg = load(name)
    model = build_model(cfg)
    if name in EXPECTED:
        assert_preset(model, cfg, EXPECTED[name])
    model.train()
    with EventStorage():
        losses = model(_batch(cfg))
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient in {missing[:5]}"
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, H, W) * 255, "height": 2 * H, "width": 2 * W}])
    assert isinstance(out[0]["instances"], Instances)
    assert out[0]["instances"].image_size == (2 * H, 2 * W)


def test_syncbn_needs_a_process_group():
    with pytest.raises(ValueError, match=r"SyncBN needs a torch.distributed process group"):
        build_model(load(SYNCBN))


def test_syncbn_builds_under_a_process_group(tmp_path):
    with process_group_of_one(tmp_path):
        cfg = load(SYNCBN)
        model = build_model(cfg)
        assert_preset(model, cfg, EXPECTED[SYNCBN])
        model.eval()  # SyncBN trains on GPUs only; inference uses its running statistics
        with torch.no_grad():
            out = model([{"image": torch.rand(3, H, W) * 255}])
        assert isinstance(out[0]["instances"], Instances)


def test_one_line_switch():
    cfg = load("RetinaNet/retinanet_R_50_FPN_1x_gn_all.yaml", "MODEL.NORMS.RETINANET_HEAD.WS", True,
               "MODEL.NORMS.FPN.TYPE", "none")
    expected = {"BACKBONE": (GN, 0), "FPN": (NONE, 0), "RETINANET_HEAD": (GN, 1)}
    assert_preset(build_model(cfg), cfg, expected)


@pytest.mark.parametrize("opts,message", [
    (["MODEL.NORMS.BACKBONE.TYPE", "XN"], r"^MODEL.NORMS.BACKBONE.TYPE: unknown norm type 'XN'"),
    (["MODEL.NORMS.GN.NUM_GROUPS", 32, "MODEL.NORMS.GN.CHANNELS_PER_GROUP", 16],
     r"^MODEL.NORMS.GN: .*both set"),
    (["MODEL.NORMS.RETINANET_HEAD.NUM_GROUPS", 24],
     r"layer head.cls_subnet.1: GN with G=24 groups needs C=256 divisible by G"),
    (["MODEL.NORMS.FPN.CHANNELS_PER_GROUP", 48], r"layer fpn.*channels_per_group=48"),
])
def test_invalid_settings_fail_at_build(opts, message):
    with pytest.raises(ValueError, match=message):
        build_model(load("RetinaNet/retinanet_R_50_FPN_1x_gn_all.yaml", *opts))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL_CONFIGS if n.startswith("real/")])
def test_real_data_config_trains_on_any_coco_dataset(name, tiny_shapes, tmp_path):
    """train_net with a configs/real/ file and another dataset (the tiny shapes, 4 classes): only
    DATASETS.COCO_FORMAT and NUM_CLASSES change (plus size and iterations, to keep it short)."""
    import json

    from cli_harness import run_cli

    dataset = ["DATASETS.COCO_FORMAT", str([
        ["real_train", f"{tiny_shapes}/annotations/train.json", f"{tiny_shapes}/train"],
        ["real_val", f"{tiny_shapes}/annotations/val.json", f"{tiny_shapes}/val"]]),
        "MODEL.RETINANET.NUM_CLASSES", "4"]
    short = ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST",
             "64", "INPUT.MAX_SIZE_TEST", "64", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()",
             "SOLVER.WARMUP_ITERS", "1", "OUTPUT_DIR", str(tmp_path)]
    cfg = load(name)
    assert cfg.SOLVER.IMS_PER_BATCH <= 2 and cfg.MODEL.WEIGHTS == ""  # small batch, from scratch
    code, _, err = run_cli("train_net", ["--config-file", str(CONFIGS / name), *dataset, *short])
    assert code == 0, err[-3000:]
    final = json.loads((tmp_path / "metrics_final.json").read_text())
    assert final["iteration"] == 2 and {"AP", "AP50"} <= set(final["results"]["bbox"])
    assert (tmp_path / "inference/real_val/confusion_matrix.png").is_file()
