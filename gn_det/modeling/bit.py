"""BiT (Big Transfer) ResNetV2 backbones: timm's `resnetv2_{50x1,50x3,101x1,101x3,152x2,152x4}_bit`
as detectron2 backbones, with the norm and WS of MODEL.NORMS.BACKBONE (default in the configs:
GN + WS, what the BiT weights were trained with).

The network is timm's, layer for layer: a 'fixed' stem (7x7/2 WS conv, zero pad 1, 3x3/2 max-pool
without padding; no norm: pre-activation), then pre-activation bottlenecks (norm+ReLU -> 1x1 ->
norm+ReLU -> 3x3 (stride here) -> norm+ReLU -> 1x1, plus a 1x1 projection of the pre-activated
input in each stage's first block), convs standardized as timm's StdConv2d with BiT's eps 1e-8
(MODEL.BIT.WS_EPS), and timm's final norm+ReLU. Names are detectron2's: outputs stem, res2-res5
(strides 4-32), `FREEZE_AT` as in detectron2's ResNet, parameters `stem.conv`, `res3.0.norm1`,
`res3.0.conv2`, `res3.0.shortcut`, `final_norm` (gn_det.checkpoint.bit_weights maps timm's).

Where the final norm lives: a pre-activation stage ends in an un-normalized residual sum, and
timm's `features_only=True` returns exactly those sums for all four stages. The final norm
(timm's `norm`, trained in front of the classifier) is applied to res5 only, so res5 equals timm's
`forward_features` and P6/P7 (plain convs from res5 in RetinaNet) see a normalized input.
res2-res4 are timm's `features_only` outputs, un-normalized (the norm that pre-activates them in
the network is the next block's `norm1`, part of that block); the FPN's lateral convs and their
norm (MODEL.NORMS.FPN) take them as they take any backbone feature. MODEL.BIT.FINAL_NORM False
returns res5 un-normalized too (timm's `features_only`).

BiT has no depth below 50; MODEL.BIT.DEPTH 0 with MODEL.BIT.BLOCKS_PER_STAGE (and the widths
MODEL.BIT.STEM_OUT_CHANNELS / RES2_OUT_CHANNELS) builds a custom one, e.g. the toy config's,
still the network timm's ResNetV2 class builds with those arguments.
"""
import dataclasses
from typing import Optional, Sequence

import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import CNNBlockBase, FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import ResNet

from ..config.specs import component_spec
from ..layers import ConvNormSpec, NormSpec, WSSpec, build_conv, build_norm
from .fpn import _fpn_args, make_fpn, make_retinanet_fpn
from .memory_format import apply_channels_last

BIT_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# timm 1.0.31's BiT models: name -> (depth, width factor)
TIMM_MODELS = {"resnetv2_50x1_bit": (50, 1), "resnetv2_50x3_bit": (50, 3),
               "resnetv2_101x1_bit": (101, 1), "resnetv2_101x3_bit": (101, 3),
               "resnetv2_152x2_bit": (152, 2), "resnetv2_152x4_bit": (152, 4)}
STEM_TYPES = ("fixed", "")  # timm's BiT stem, and its plain one (max-pool padding 1)
STAGE_NAMES = ("res2", "res3", "res4", "res5")
BIT_FEATURES = ("stem",) + STAGE_NAMES
BIT_WS_EPS = 1e-8  # timm's StdConv2d eps in its BiT models (its StdConv2d default is 1e-6)
BIT_SPEC = ConvNormSpec(NormSpec("GN"), WSSpec(True, "timm", BIT_WS_EPS))


def _preact(norm: Optional[nn.Module], x):
    """Pre-activation: norm (if any), then ReLU (timm's GroupNormAct)."""
    return F.relu(norm(x) if norm is not None else x)


def _conv(in_ch, out_ch, k, spec: ConvNormSpec, stride=1):
    """A bias-free conv with timm's symmetric padding and the spec's WS, no norm attached (the
    norm of a pre-activation net comes before the conv)."""
    return build_conv(in_ch, out_ch, k, spec=ConvNormSpec(NormSpec(""), spec.ws), bias=False,
                      stride=stride, padding=(stride - 1 + k - 1) // 2)


class BiTStem(CNNBlockBase):
    """7x7/2 conv, then 3x3/2 max-pool: after zero padding 1 ('fixed', BiT's) or padding 1."""

    def __init__(self, in_channels=3, out_channels=64, *, spec=BIT_SPEC, stem_type="fixed"):
        super().__init__(in_channels, out_channels, 4)
        self.conv = _conv(in_channels, out_channels, 7, spec, stride=2)
        self.fixed_pad = stem_type == "fixed"

    def forward(self, x):
        x = self.conv(x)
        if self.fixed_pad:
            return F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=0.0), kernel_size=3, stride=2)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class PreActBottleneck(CNNBlockBase):
    """timm's PreActBottleneck: the stride in the 3x3 conv, the projection shortcut (first block
    of a stage) applied to the pre-activated input."""

    def __init__(self, in_channels, out_channels, *, bottleneck_channels, stride=1,
                 projection=False, spec=BIT_SPEC, name="?"):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = _conv(in_channels, out_channels, 1, spec, stride) if projection else None
        self.norm1 = build_norm(spec.norm, in_channels, f"{name}.norm1")
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, spec)
        self.norm2 = build_norm(spec.norm, bottleneck_channels, f"{name}.norm2")
        self.conv2 = _conv(bottleneck_channels, bottleneck_channels, 3, spec, stride)
        self.norm3 = build_norm(spec.norm, bottleneck_channels, f"{name}.norm3")
        self.conv3 = _conv(bottleneck_channels, out_channels, 1, spec)

    def forward(self, x):
        x_preact = _preact(self.norm1, x)
        shortcut = self.shortcut(x_preact) if self.shortcut is not None else x
        x = self.conv1(x_preact)
        x = self.conv2(_preact(self.norm2, x))
        x = self.conv3(_preact(self.norm3, x))
        return x + shortcut


class BiTResNet(ResNet):
    """detectron2's ResNet (outputs, strides, freeze) over BiT's stem and blocks, plus timm's
    final norm+ReLU on res5 when `final_norm` is given (see the module docstring)."""

    out_features_key = "MODEL.BIT.OUT_FEATURES"  # named in FPN errors (gn_det.modeling.fpn)

    def __init__(self, stem, stages, out_features, final_norm: Optional[nn.Module] = None,
                 final_preact: bool = True, freeze_at: int = 0):
        super().__init__(stem, stages, out_features=list(out_features))
        self.final_norm = final_norm
        self.final_preact = final_preact and "res5" in self.stage_names
        self.freeze(freeze_at)

    def forward(self, x):
        outputs = super().forward(x)
        if self.final_preact and "res5" in outputs:  # res5 is the last stage: nothing follows
            outputs["res5"] = _preact(self.final_norm, outputs["res5"])
        return outputs

    def freeze(self, freeze_at=0):
        """detectron2's semantics (1 = stem, 2 = stem + res2, ...); the final norm belongs to
        res5 (frozen with it, BN there becoming FrozenBN)."""
        super().freeze(freeze_at)
        norm = getattr(self, "final_norm", None)
        if freeze_at >= 5 and norm is not None:
            for p in norm.parameters():
                p.requires_grad = False
            self.final_norm = FrozenBatchNorm2d.convert_frozen_batchnorm(norm)
        return self


@dataclasses.dataclass(frozen=True)
class BiTWidths:
    """Blocks per stage and channels of a BiT network (what its weights' shapes fix)."""

    blocks_per_stage: tuple
    stem_out_channels: int
    res2_out_channels: int

    @property
    def stage_out_channels(self):
        return tuple(self.res2_out_channels * 2 ** i for i in range(4))


def bit_widths(depth: int = 50, width_factor: int = 1, blocks_per_stage: Sequence[int] = (),
               stem_out_channels: int = 0, res2_out_channels: int = 0) -> BiTWidths:
    """Resolve depth / width settings (0 = derived: 64 x width, 256 x width) to BiTWidths, or a
    ValueError naming the MODEL.BIT key."""
    if depth not in BIT_DEPTHS and depth != 0:
        raise ValueError(f"MODEL.BIT.DEPTH={depth} is not a BiT depth; valid: "
                         f"{', '.join(map(str, BIT_DEPTHS))} (timm's), or 0 for a custom depth "
                         f"set by MODEL.BIT.BLOCKS_PER_STAGE")
    blocks = tuple(blocks_per_stage)
    if depth == 0 and (len(blocks) != 4 or not all(isinstance(n, int) and n > 0 for n in blocks)):
        raise ValueError(f"MODEL.BIT.BLOCKS_PER_STAGE={list(blocks)}: MODEL.BIT.DEPTH 0 needs 4 "
                         f"positive block counts (res2-res5), e.g. [1, 1, 1, 1]")
    if depth and blocks and blocks != BIT_DEPTHS[depth]:
        raise ValueError(f"MODEL.BIT.BLOCKS_PER_STAGE={list(blocks)} contradicts MODEL.BIT.DEPTH="
                         f"{depth} ({list(BIT_DEPTHS[depth])}); set DEPTH 0 for a custom depth, "
                         f"or BLOCKS_PER_STAGE []")
    if not (isinstance(width_factor, int) and width_factor > 0):
        raise ValueError(f"MODEL.BIT.WIDTH_FACTOR={width_factor}; expected a positive integer "
                         f"(timm's BiT: 1, 2, 3, 4)")
    stem = stem_out_channels or 64 * width_factor
    res2 = res2_out_channels or 256 * width_factor
    # Multiples of 8 (stem) and 32 (res2, so the bottleneck res2/4 is one of 8): the widths
    # timm's make_divisible leaves unchanged, so timm's ResNetV2 builds the same network.
    if stem <= 0 or stem % 8:
        raise ValueError(f"MODEL.BIT.STEM_OUT_CHANNELS={stem_out_channels}: expected 0 (64 x "
                         f"WIDTH_FACTOR) or a positive multiple of 8")
    if res2 <= 0 or res2 % 32:
        raise ValueError(f"MODEL.BIT.RES2_OUT_CHANNELS={res2_out_channels}: expected 0 (256 x "
                         f"WIDTH_FACTOR) or a positive multiple of 32")
    return BiTWidths(blocks or BIT_DEPTHS[depth], stem, res2)


def _bit_from_config(cfg, input_shape: Optional[ShapeSpec] = None):
    b = cfg.MODEL.BIT
    channels = input_shape.channels if input_shape is not None else len(cfg.MODEL.PIXEL_MEAN)
    spec = component_spec(cfg, "BACKBONE")
    return dict(depth=b.DEPTH, width_factor=b.WIDTH_FACTOR,
                blocks_per_stage=tuple(b.BLOCKS_PER_STAGE), stem_out_channels=b.STEM_OUT_CHANNELS,
                res2_out_channels=b.RES2_OUT_CHANNELS, stem_type=b.STEM_TYPE,
                final_norm=b.FINAL_NORM, norm=spec.norm, ws=spec.ws, ws_eps=b.WS_EPS,
                in_channels=channels, out_features=tuple(b.OUT_FEATURES),
                freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@configurable(from_config=_bit_from_config)
def make_bit(*, depth: int = 50, width_factor: int = 1, blocks_per_stage: Sequence[int] = (),
             stem_out_channels: int = 0, res2_out_channels: int = 0, stem_type: str = "fixed",
             final_norm: bool = True, norm="GN", ws=True, ws_eps: float = BIT_WS_EPS,
             in_channels: int = 3, out_features: Sequence[str] = STAGE_NAMES, freeze_at: int = 0,
             name: str = "backbone") -> BiTResNet:
    """A BiT ResNetV2 (module docstring) normalized by `norm` (anything NormSpec.of takes: "GN",
    a NormSpec, a dict; "" for none) with WS per `ws` (bool or WSSpec) at eps `ws_eps` (0 = the
    WSSpec's). Call with plain arguments, or as `make_bit(cfg, input_shape)`. `name` prefixes
    layer names in error messages. Only the stages up to the last of `out_features` are built
    (the final norm only with res5)."""
    widths = bit_widths(depth, width_factor, blocks_per_stage, stem_out_channels,
                        res2_out_channels)
    if ws_eps < 0:
        raise ValueError(f"MODEL.BIT.WS_EPS={ws_eps}; expected >= 0 (0 = MODEL.NORMS.WS.EPS)")
    spec = ConvNormSpec.of(norm, ws)
    if spec.ws and ws_eps:
        spec = dataclasses.replace(spec, ws=dataclasses.replace(spec.ws, eps=ws_eps))
    if stem_type not in STEM_TYPES:
        raise ValueError(f"MODEL.BIT.STEM_TYPE={stem_type!r}; valid: 'fixed' (BiT's), '' "
                         f"(max-pool padding 1)")
    if not out_features or any(f not in BIT_FEATURES for f in out_features):
        raise ValueError(f"MODEL.BIT.OUT_FEATURES={list(out_features)}; valid names: "
                         f"{', '.join(BIT_FEATURES)}")
    stem = BiTStem(in_channels, widths.stem_out_channels, spec=spec, stem_type=stem_type)
    num_stages = max(BIT_FEATURES.index(f) for f in out_features)
    in_ch, stages = widths.stem_out_channels, []
    for idx, (stage, n, out_ch) in enumerate(zip(STAGE_NAMES[:num_stages], widths.blocks_per_stage,
                                                 widths.stage_out_channels)):
        blocks = []
        for i in range(n):
            first = i == 0
            blocks.append(PreActBottleneck(
                in_ch if first else out_ch, out_ch, bottleneck_channels=out_ch // 4,
                stride=2 if first and idx > 0 else 1, projection=first, spec=spec,
                name=f"{name}.{stage}.{i}"))
        stages.append(blocks)
        in_ch = out_ch
    has_res5 = num_stages == 4
    norm = build_norm(spec.norm, in_ch, f"{name}.final_norm") if has_res5 and final_norm else None
    return BiTResNet(stem, stages, out_features, final_norm=norm,
                     final_preact=bool(final_norm), freeze_at=freeze_at)


@BACKBONE_REGISTRY.register()
def build_gn_bit_backbone(cfg, input_shape: ShapeSpec) -> BiTResNet:
    """A BiT ResNetV2 from MODEL.BIT with the norm and WS of MODEL.NORMS.BACKBONE."""
    return apply_channels_last(make_bit(cfg, input_shape), cfg.MODEL.CHANNELS_LAST)


@BACKBONE_REGISTRY.register()
def build_gn_bit_fpn_backbone(cfg, input_shape: ShapeSpec):
    """BiT-FPN, p2-p6 (P6 by max-pool) as build_gn_resnet_fpn_backbone; MODEL.NORMS.FPN."""
    fpn = make_fpn(make_bit(cfg, input_shape), top_block=LastLevelMaxPool(), **_fpn_args(cfg))
    return apply_channels_last(fpn, cfg.MODEL.CHANNELS_LAST)


@BACKBONE_REGISTRY.register()
def build_gn_retinanet_bit_fpn_backbone(cfg, input_shape: ShapeSpec):
    """BiT-FPN for RetinaNet, p3-p7 (P6/P7: detectron2's plain convs, here from the final-normed
    res5) as build_gn_retinanet_resnet_fpn_backbone; MODEL.NORMS.FPN."""
    return make_retinanet_fpn(cfg, make_bit(cfg, input_shape))
