"""ResNet / ResNeXt backbones (depth 18-152) with the norm and WS of MODEL.NORMS.BACKBONE.

Built from detectron2's own BasicStem, BasicBlock, BottleneckBlock and ResNet: the norm comes in
through their `norm=` argument (gn_det's norm builder) and WS by converting their convs in place.
Parameter names, output features, strides and FREEZE_AT semantics therefore stay detectron2's, and
its checkpoints (Caffe2 .pkl included) load unchanged.
"""
from typing import Optional, Sequence

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import (BasicBlock, BasicStem, BottleneckBlock,
                                                 DeformBottleneckBlock, ResNet)

from ..config.specs import component_spec
from ..layers import ConvNormSpec, convert_to_ws, norm_arg
from .memory_format import apply_channels_last

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                    152: (3, 8, 36, 3)}
STAGE_NAMES = ("res2", "res3", "res4", "res5")
RESNET_FEATURES = ("stem",) + STAGE_NAMES


def _resnet_from_config(cfg, input_shape: Optional[ShapeSpec] = None):
    r = cfg.MODEL.RESNETS
    channels = input_shape.channels if input_shape is not None else len(cfg.MODEL.PIXEL_MEAN)
    spec = component_spec(cfg, "BACKBONE")
    return dict(depth=r.DEPTH, norm=spec.norm, ws=spec.ws, in_channels=channels,
                stem_out_channels=r.STEM_OUT_CHANNELS, res2_out_channels=r.RES2_OUT_CHANNELS,
                num_groups=r.NUM_GROUPS, width_per_group=r.WIDTH_PER_GROUP,
                stride_in_1x1=r.STRIDE_IN_1X1, res5_dilation=r.RES5_DILATION,
                deform_on_per_stage=tuple(r.DEFORM_ON_PER_STAGE),
                deform_modulated=r.DEFORM_MODULATED, deform_num_groups=r.DEFORM_NUM_GROUPS,
                out_features=tuple(r.OUT_FEATURES), freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@configurable(from_config=_resnet_from_config)
def make_resnet(*, depth: int = 50, norm="", ws=False, in_channels: int = 3,
                stem_out_channels: int = 64, res2_out_channels: int = 256, num_groups: int = 1,
                width_per_group: int = 64, stride_in_1x1: bool = True, res5_dilation: int = 1,
                deform_on_per_stage: Sequence[bool] = (False,) * 4, deform_modulated: bool = False,
                deform_num_groups: int = 1, out_features: Sequence[str] = STAGE_NAMES,
                freeze_at: int = 0, name: str = "backbone") -> ResNet:
    """A detectron2 `ResNet` whose stem, blocks and shortcut convs use `norm` (anything
    NormSpec.of takes: "GN", a NormSpec, a dict; "" for none) and `ws` (bool or WSSpec). Call
    with plain arguments (LazyConfig: `L(make_resnet)(depth=50, norm="GN", ws=True)`), or as
    `make_resnet(cfg, input_shape)`. `name` prefixes the layer names in error messages. Only the
    stages up to the last of `out_features` are built."""
    spec = ConvNormSpec.of(norm, ws)
    _check_resnet_args(depth, res2_out_channels, num_groups, res5_dilation, deform_on_per_stage,
                       out_features, spec)
    stem = BasicStem(in_channels, stem_out_channels, norm=norm_arg(spec.norm, f"{name}.stem"))
    convert_to_ws(stem, spec.ws)
    num_stages = max(RESNET_FEATURES.index(f) for f in out_features)
    bottleneck_channels = num_groups * width_per_group
    in_ch, out_ch, stages = stem_out_channels, res2_out_channels, []
    for idx, stage_name in enumerate(STAGE_NAMES[:num_stages]):
        n = BLOCKS_PER_STAGE[depth][idx]
        dilation = res5_dilation if stage_name == "res5" else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        kwargs = dict(num_blocks=n, in_channels=in_ch, out_channels=out_ch,
                      stride_per_block=[first_stride] + [1] * (n - 1),
                      norm_per_block=[norm_arg(spec.norm, f"{name}.{stage_name}.{i}")
                                      for i in range(n)])
        if depth < 50:
            kwargs.update(block_class=BasicBlock)
        else:
            kwargs.update(block_class=BottleneckBlock, bottleneck_channels=bottleneck_channels,
                          stride_in_1x1=stride_in_1x1, dilation=dilation, num_groups=num_groups)
            if deform_on_per_stage[idx]:
                kwargs.update(block_class=DeformBottleneckBlock, deform_modulated=deform_modulated,
                              deform_num_groups=deform_num_groups)
        blocks = ResNet.make_stage(**kwargs)
        for block in blocks:
            convert_to_ws(block, spec.ws)
        stages.append(blocks)
        in_ch, out_ch, bottleneck_channels = out_ch, out_ch * 2, bottleneck_channels * 2
    # freeze() after construction: requires_grad=False on frozen stages (GN affine included) and
    # BN -> FrozenBN there, exactly detectron2's semantics.
    return ResNet(stem, stages, out_features=list(out_features)).freeze(freeze_at)


def _check_resnet_args(depth, res2_out_channels, num_groups, res5_dilation, deform_on_per_stage,
                       out_features, spec):
    """One-line errors naming the config key, where detectron2 would assert or KeyError."""
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH={depth} is not supported; valid: "
                         f"{', '.join(map(str, BLOCKS_PER_STAGE))}")
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION={res5_dilation}; valid: 1, 2")
    if len(deform_on_per_stage) != 4:
        raise ValueError(f"MODEL.RESNETS.DEFORM_ON_PER_STAGE needs 4 entries (res2-res5), got "
                         f"{list(deform_on_per_stage)}")
    if depth < 50:
        for key, value, valid in [("RES2_OUT_CHANNELS", res2_out_channels, 64),
                                  ("NUM_GROUPS", num_groups, 1),
                                  ("RES5_DILATION", res5_dilation, 1)]:
            if value != valid:
                raise ValueError(f"MODEL.RESNETS.{key}={value}: ResNet-{depth} (BasicBlock) "
                                 f"needs {valid}")
        if any(deform_on_per_stage):
            raise ValueError(f"MODEL.RESNETS.DEFORM_ON_PER_STAGE: ResNet-{depth} (BasicBlock) has "
                             f"no deformable variant; needs depth >= 50")
    if any(deform_on_per_stage) and spec.ws:
        raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE with MODEL.NORMS.BACKBONE.WS: "
                         "deformable convs cannot be weight-standardized; turn one of them off")
    if not out_features or any(f not in RESNET_FEATURES for f in out_features):
        raise ValueError(f"MODEL.RESNETS.OUT_FEATURES={list(out_features)}; valid names: "
                         f"{', '.join(RESNET_FEATURES)}")


@BACKBONE_REGISTRY.register()
def build_gn_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """detectron2's build_resnet_backbone with the norm and WS of MODEL.NORMS.BACKBONE (falling
    back to MODEL.RESNETS.NORM)."""
    return apply_channels_last(make_resnet(cfg, input_shape), cfg.MODEL.CHANNELS_LAST)
