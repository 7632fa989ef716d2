"""ResNet-FPN backbones whose FPN lateral/output convs use the norm and WS of MODEL.NORMS.FPN.

detectron2's own FPN, LastLevelMaxPool and LastLevelP6P7 are reused, so feature names (p2-p6, or
p3-p7 for RetinaNet), strides, channels and parameter names are detectron2's.

P6/P7 of the RetinaNet variant stay detectron2's LastLevelP6P7: plain 3x3 convs with bias, no norm,
no WS, computed from res5 as in Detectron's RetinaNet and detectron2 (v0.6 and main). Their outputs
go straight into the RetinaNet head, which normalizes every level itself; keeping them plain also
keeps detectron2 RetinaNet checkpoints (p6/p7 biases) loadable.
"""
from typing import Optional, Sequence

from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from ..config.specs import component_spec
from ..layers import ConvNormSpec, WSSpec, convert_to_ws, norm_arg
from .memory_format import apply_channels_last
from .resnet import make_resnet


def make_fpn(bottom_up: Backbone, in_features: Sequence[str], out_channels: int = 256, *,
             norm="", ws=False, top_block: Optional[nn.Module] = None, fuse_type: str = "sum",
             name: str = "fpn") -> FPN:
    """detectron2's FPN over `bottom_up` with its lateral and output convs normalized by `norm`
    (anything NormSpec.of takes) and weight-standardized per `ws` (the bottom-up network and
    `top_block` are left as they are). `name` names the FPN in errors."""
    spec = ConvNormSpec.of(norm, ws)
    available = bottom_up.output_shape()
    missing = [f for f in in_features if f not in available]
    if not in_features or missing:
        raise ValueError(f"MODEL.FPN.IN_FEATURES={list(in_features)}: the bottom-up network "
                         f"outputs {sorted(available)} ({_out_features_key(bottom_up)})")
    if fuse_type not in ("sum", "avg"):
        raise ValueError(f"MODEL.FPN.FUSE_TYPE={fuse_type!r}; valid: sum, avg")
    fpn = FPN(bottom_up=bottom_up, in_features=list(in_features), out_channels=out_channels,
              norm=norm_arg(spec.norm, name), top_block=top_block, fuse_type=fuse_type)
    _fpn_convs_to_ws(fpn, spec.ws)
    return fpn


def _out_features_key(bottom_up: Backbone) -> str:
    """The config key that sets the bottom-up network's outputs (e.g. BiT's MODEL.BIT...)."""
    return getattr(bottom_up, "out_features_key", "MODEL.RESNETS.OUT_FEATURES")


def _fpn_convs_to_ws(fpn: FPN, ws: WSSpec):
    """Make FPN's own fpn_lateral*/fpn_output* convs WS (convert_to_ws also re-points the plain
    lists lateral_convs/output_convs that forward uses); bottom-up and top block untouched."""
    others = [m for child in (fpn.bottom_up, fpn.top_block) if child is not None
              for m in child.modules()]
    convert_to_ws(fpn, ws, exclude=others)


def _fpn_args(cfg):
    f = cfg.MODEL.FPN
    spec = component_spec(cfg, "FPN")
    return dict(in_features=f.IN_FEATURES, out_channels=f.OUT_CHANNELS, norm=spec.norm,
                ws=spec.ws, fuse_type=f.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_gn_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """detectron2's build_resnet_fpn_backbone (p2-p6, P6 by max-pool) with per-component norm/WS:
    MODEL.NORMS.BACKBONE for the ResNet, MODEL.NORMS.FPN for the FPN."""
    bottom_up = make_resnet(cfg, input_shape)
    fpn = make_fpn(bottom_up, top_block=LastLevelMaxPool(), **_fpn_args(cfg))
    return apply_channels_last(fpn, cfg.MODEL.CHANNELS_LAST)


def make_retinanet_fpn(cfg, bottom_up: Backbone):
    """detectron2's RetinaNet FPN (p3-p7; P6/P7 plain convs from res5) over `bottom_up` with
    MODEL.NORMS.FPN."""
    shapes = bottom_up.output_shape()
    if "res5" not in shapes:
        raise ValueError(f"{_out_features_key(bottom_up)}={list(shapes)}: the RetinaNet FPN "
                         f"computes P6/P7 from res5, which must be among them")
    args = _fpn_args(cfg)
    top_block = LastLevelP6P7(shapes["res5"].channels, args["out_channels"])
    return apply_channels_last(make_fpn(bottom_up, top_block=top_block, **args),
                               cfg.MODEL.CHANNELS_LAST)


@BACKBONE_REGISTRY.register()
def build_gn_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """detectron2's build_retinanet_resnet_fpn_backbone (p3-p7, P6/P7 convs from res5) with
    per-component norm/WS as build_gn_resnet_fpn_backbone; P6/P7 stay plain (module docstring)."""
    return make_retinanet_fpn(cfg, make_resnet(cfg, input_shape))
