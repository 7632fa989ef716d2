"""Every norm the small-batch study compares (BN, FrozenBN, GN, GN+WS, BRN, FRN, EvoNorm-S0),
selected per component with MODEL.NORMS.<COMPONENT>.TYPE (and LazyConfig's `norm=`): it is built
in the backbone, FPN and RetinaNet head, and in the box and mask heads of a Mask R-CNN; the
detector trains a step, is saved and loaded back to the same outputs. Export: the RetinaNet's is
tests/export/test_pipeline (EXPORT_NORMS); an R-CNN is refused by export in one line."""
import pytest
import torch
from torch import nn

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from cli_harness import TINY_MODEL_OPTS
from gn_det.checkpoint import AtomicCheckpointer
from gn_det.config import load_cfg
from gn_det.engine.optimizer import build_optimizer
from gn_det.export import ExportError, check_supported
from gn_det.layers import BatchRenorm2d, WSConv2d, timm_norm_types

from helpers import REPO, TOY_CONFIG

MASK_RCNN = str(REPO / "configs/RCNN/mask_rcnn_R_50_FPN_1x_gn.yaml")
# norm -> (MODEL.NORMS TYPE, WS, the module class it builds; None: timm's, looked up)
NORMS = {"BN": ("BN", False, nn.BatchNorm2d), "FrozenBN": ("FrozenBN", False, FrozenBatchNorm2d),
         "GN": ("GN", False, nn.GroupNorm), "GN+WS": ("GN", True, nn.GroupNorm),
         "BRN": ("BRN", False, BatchRenorm2d), "FRN": ("FRN", False, None),
         "EvoNormS0": ("EvoNormS0", False, None)}
RETINANET_PARTS = {"BACKBONE": "backbone.bottom_up", "FPN": "backbone.fpn_output3",
                   "RETINANET_HEAD": "head"}
RCNN_PARTS = {"BACKBONE": "backbone.bottom_up", "FPN": "backbone.fpn_output3",
              "BOX_HEAD": "roi_heads.box_head", "MASK_HEAD": "roi_heads.mask_head"}


def norm_class(norm):
    kind, _, cls = NORMS[norm]
    if cls is None:
        pytest.importorskip("timm")
        cls = dict(zip(("FRN", "EvoNormS0"), timm_norm_types()))[kind]
    return cls


def norm_opts(norm, components):
    kind, ws, _ = NORMS[norm]
    opts = []
    for c in components:
        opts += [f"MODEL.NORMS.{c}.TYPE", kind, f"MODEL.NORMS.{c}.WS", ws]
    return opts


@pytest.fixture(autouse=True)
def one_thread():
    """Multi-threaded torch crawls on a shared CPU; these models are tiny anyway."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def retinanet(norm):
    return load_cfg(TOY_CONFIG, [*TINY_MODEL_OPTS, *norm_opts(norm, RETINANET_PARTS),
                                 "MODEL.DEVICE", "cpu", "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0])


def mask_rcnn(norm):
    return load_cfg(MASK_RCNN, [
        *norm_opts(norm, RCNN_PARTS), "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
        "MODEL.BACKBONE.FREEZE_AT", 0, "MODEL.RESNETS.DEPTH", 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.FPN.OUT_CHANNELS", 32,
        "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]],
        "MODEL.ROI_HEADS.NUM_CLASSES", 3, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.NUM_CONV", 2,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
        "MODEL.ROI_MASK_HEAD.NUM_CONV", 2, "MODEL.NORMS.GN.NUM_GROUPS", 8,
        "MODEL.PIXEL_STD", [57.375, 57.120, 58.395]])


def batch(masks=False):
    out = []
    for boxes in ([[8, 10, 40, 44], [40, 20, 60, 58]], [[12, 12, 50, 50]]):
        inst = Instances((64, 64))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.arange(len(boxes)) % 3
        if masks:
            m = torch.zeros(len(boxes), 64, 64, dtype=torch.bool)
            for mask, (x0, y0, x1, y1) in zip(m, boxes):
                mask[y0:y1, x0:x1] = True
            inst.gt_masks = BitMasks(m)
        out.append({"image": torch.rand(3, 64, 64) * 255, "instances": inst})
    return out


def submodule(model, dotted):
    for part in dotted.split("."):
        model = getattr(model, part)
    return model


def check_built_everywhere(model, norm, parts):
    cls, ws = norm_class(norm), NORMS[norm][1]
    for component, where in parts.items():
        module = submodule(model, where)
        assert any(type(m) is cls for m in module.modules()), (norm, component)
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        assert any(isinstance(c, WSConv2d) for c in convs) == ws, (norm, component)


def train_step_save_and_load(cfg, data, tmp_path):
    """One optimizer step (every trainable parameter gets a gradient and the weights move), then
    the model saved as training saves it and loaded strictly into a fresh one: same outputs."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with EventStorage():
        losses = model(data)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    AtomicCheckpointer(model, str(tmp_path)).save("model_final")
    torch.manual_seed(1)
    loaded = build_model(cfg)
    AtomicCheckpointer(loaded, strict=True).load(str(tmp_path / "model_final.pth"))
    model.eval(), loaded.eval()
    image = [{"image": data[0]["image"]}]
    with torch.no_grad():
        a, b = model(image)[0]["instances"], loaded(image)[0]["instances"]
    assert len(a) and torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert torch.equal(a.scores, b.scores)
    return model


@pytest.mark.parametrize("norm", list(NORMS))
def test_retinanet_builds_trains_saves_and_loads(norm, tmp_path):
    cfg = retinanet(norm)
    model = train_step_save_and_load(cfg, batch(), tmp_path)
    check_built_everywhere(model, norm, RETINANET_PARTS)
    check_supported(model)  # exported: tests/export/test_pipeline.py, every EXPORT_NORMS entry


@pytest.mark.parametrize("norm", list(NORMS))
def test_mask_rcnn_builds_trains_saves_and_loads_and_export_refuses_it(norm, tmp_path):
    cfg = mask_rcnn(norm)
    model = train_step_save_and_load(cfg, batch(masks=True), tmp_path)
    check_built_everywhere(model, norm, RCNN_PARTS)
    with pytest.raises(ExportError, match=r"^MODEL.META_ARCHITECTURE GeneralizedRCNN: export "
                                          r"supports RetinaNet models"):
        check_supported(model)


@pytest.mark.parametrize("norm", ["BRN", "FRN", "EvoNormS0"])
def test_lazy_config_selects_the_norm_per_component(norm):
    from detectron2.config import instantiate

    from gn_det.config.lazy import load_lazy_cfg

    cls = norm_class(norm)
    cfg = load_lazy_cfg(str(REPO / "configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py"),
                        [f"model.backbone.bottom_up.norm={norm}",
                         "model.backbone.bottom_up.ws=False"])
    model = instantiate(cfg.model)
    assert type(model.backbone.bottom_up.stem.conv1.norm) is cls
    assert type(model.backbone.fpn_lateral3.norm) is nn.GroupNorm  # the other components keep GN
