"""RetinaNet head with a per-component norm (GN, GN+WS, BN/SyncBN per level, ...) and the
`GNRetinaNet` meta-architecture that puts it on detectron2's RetinaNet.

Norms across FPN levels (the head's convs are shared by all levels):
- BN, SyncBN, BRN keep running batch statistics, and feature statistics differ per level, so each
  level gets its own statistics (detectron2's `CycleBatchNormList`: per-level BN, shared affine,
  as detectron2 main's head and Rethinking-BN Sec. 5.2 do);
- GN / LN / LN_CHW / IN normalize each sample on its own and FrozenBN is a fixed affine, so one
  module is shared by all levels, like the convs (as Detectron's and mmdet's GN RetinaNet heads
  do); so are naiveSyncBN / naiveSyncBN_N and callables, as in detectron2 main's head.

The state-dict layout is detectron2's RetinaNetHead's (`cls_subnet.{0,1,...}`, `cls_score`,
`bbox_pred`), so detectron2 RetinaNet checkpoints load. Unlike detectron2 v0.6's head, the norm is
never probed with one channel (v0.6 builds GroupNorm(32, 1), which current torch rejects:
detectron2 issue 4369).
"""
import dataclasses
import functools
import math
from typing import List

from torch import Tensor, nn

from detectron2.config import configurable
from detectron2.layers import CycleBatchNormList, ShapeSpec
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.meta_arch import META_ARCH_REGISTRY, RetinaNet

from ..config.specs import component_spec
from ..layers import ConvNormSpec, NormSpec, build_conv, build_norm

__all__ = ["GNRetinaNetHead", "GNRetinaNet"]
PER_LEVEL_TYPES = ("BN", "SyncBN", "BRN")  # detectron2 main's, and BRN: running stats


class GNRetinaNetHead(nn.Module):
    """RetinaNet's classification and box subnets (shared across levels), normalized per `norm`
    and weight-standardized per `ws`; the final cls_score / bbox_pred convs stay plain."""

    @configurable
    def __init__(self, *, input_shape: List[ShapeSpec], num_classes: int, num_anchors: int,
                 conv_dims: List[int], norm="", ws=False, prior_prob: float = 0.01):
        """
        Args:
            input_shape: one ShapeSpec per FPN level (all with the same channels).
            num_classes, num_anchors: outputs per anchor, anchors per position.
            conv_dims: output channels of each subnet conv.
            norm: anything `NormSpec.of` takes ("GN", a NormSpec, a dict, "" for none).
            ws: weight-standardize the subnet convs (bool or WSSpec).
            prior_prob: initial foreground probability of cls_score (focal-loss prior).
        """
        super().__init__()
        spec = ConvNormSpec.of(norm, ws)
        self._num_levels = len(input_shape)
        channels = [input_shape[0].channels] + list(conv_dims)
        self.cls_subnet = self._subnet("cls_subnet", channels, spec)
        self.bbox_subnet = self._subnet("bbox_subnet", channels, spec)
        self.cls_score = nn.Conv2d(channels[-1], num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(channels[-1], num_anchors * 4, 3, padding=1)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0, std=0.01)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    def _subnet(self, name: str, channels: List[int], spec: ConvNormSpec) -> nn.Sequential:
        # [conv, norm, relu] * N with detectron2's indices; the norm is not attached to the conv.
        layers = []
        for in_channels, out_channels in zip(channels[:-1], channels[1:]):
            norm = self._norm(spec.norm, out_channels, f"head.{name}.{len(layers) + 1}")
            conv_spec = ConvNormSpec(NormSpec(), spec.ws)
            layers.append(build_conv(in_channels, out_channels, 3, spec=conv_spec, padding=1,
                                     bias=norm is None, layer=f"head.{name}.{len(layers)}"))
            if norm is not None:
                layers.append(norm)
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def _norm(self, spec: NormSpec, channels: int, layer: str):
        norm = build_norm(spec, channels, layer)
        if spec.type not in PER_LEVEL_TYPES:
            return norm  # per-sample (GN/LN/IN) or fixed (FrozenBN) statistics: shared by levels
        per_level = functools.partial(_affine_free_norm, spec, layer)
        return CycleBatchNormList(self._num_levels, bn_class=per_level, num_features=channels)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        num_anchors = set(build_anchor_generator(cfg, input_shape).num_cell_anchors)
        if len(num_anchors) != 1:
            raise ValueError(f"MODEL.ANCHOR_GENERATOR: RetinaNet needs the same number of anchors "
                             f"on every level, got {sorted(num_anchors)}")
        spec = component_spec(cfg, "RETINANET_HEAD")
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.RETINANET.NUM_CLASSES,
            "num_anchors": num_anchors.pop(),
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.RETINANET.NUM_CONVS,
            "norm": spec.norm,
            "ws": spec.ws,
            "prior_prob": cfg.MODEL.RETINANET.PRIOR_PROB,
        }

    def forward(self, features: List[Tensor]):
        """Per level: logits (N, A*K, Hi, Wi) and box deltas (N, A*4, Hi, Wi), as detectron2's."""
        if len(features) != self._num_levels:
            raise ValueError(f"GNRetinaNetHead was built for {self._num_levels} levels, "
                             f"got {len(features)} feature maps")
        for module in self.modules():  # per-level BNs start at level 0 on every call
            if isinstance(module, CycleBatchNormList):
                module._pos = 0
        logits = [self.cls_score(self.cls_subnet(f)) for f in features]
        bbox_reg = [self.bbox_pred(self.bbox_subnet(f)) for f in features]
        return logits, bbox_reg


def _affine_free_norm(spec: NormSpec, layer: str, num_features: int, affine: bool) -> nn.Module:
    """One level's statistics for CycleBatchNormList, which keeps the affine shared."""
    return build_norm(dataclasses.replace(spec, affine=affine), num_features, layer)


@META_ARCH_REGISTRY.register()
class GNRetinaNet(RetinaNet):
    """detectron2's RetinaNet with GNRetinaNetHead, whose norm and WS come from
    MODEL.NORMS.RETINANET_HEAD (falling back to MODEL.RETINANET.NORM)."""

    @classmethod
    def from_config(cls, cfg):
        # detectron2's from_config also builds its own head, which v0.6 cannot build for GN
        # (issue 4369); build that throwaway one without a norm, then replace it.
        stock = cfg.clone()
        stock.defrost()
        stock.MODEL.RETINANET.NORM = ""
        ret = super().from_config(stock)
        shapes = ret["backbone"].output_shape()
        ret["head"] = GNRetinaNetHead(cfg, [shapes[f] for f in cfg.MODEL.RETINANET.IN_FEATURES])
        return ret
