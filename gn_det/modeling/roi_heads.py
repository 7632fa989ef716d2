"""R-CNN box and mask heads with GN / GN+WS: detectron2's heads taking gn_det's norm spec.

`GNFastRCNNConvFCHead` is Detectron's 4conv1fc box head with MODEL.ROI_BOX_HEAD.NUM_CONV 4 and
NUM_FC 1; `GNMaskRCNNConvUpsampleHead` is the standard mask head. Their norm and WS come from
MODEL.NORMS.BOX_HEAD / MASK_HEAD (falling back to MODEL.ROI_BOX_HEAD.NORM / ROI_MASK_HEAD.NORM).
Parameter names are detectron2's, so its checkpoints load. WS applies to the 3x3 convs only: the
fc layers, the deconv and the mask predictor stay plain.
"""
from detectron2.config import configurable
from detectron2.modeling.roi_heads import (ROI_BOX_HEAD_REGISTRY, ROI_MASK_HEAD_REGISTRY,
                                           FastRCNNConvFCHead, MaskRCNNConvUpsampleHead)

from ..config.specs import component_spec
from ..layers import ConvNormSpec, convert_to_ws, norm_arg

__all__ = ["GNFastRCNNConvFCHead", "GNMaskRCNNConvUpsampleHead"]


def _with_component_norm(stock_kwargs: dict, cfg, component: str) -> dict:
    """detectron2's from_config kwargs with its `conv_norm` string replaced by the component's
    resolved norm and WS."""
    spec = component_spec(cfg, component)
    kwargs = {k: v for k, v in stock_kwargs.items() if k != "conv_norm"}
    return {**kwargs, "norm": spec.norm, "ws": spec.ws}


@ROI_BOX_HEAD_REGISTRY.register()
class GNFastRCNNConvFCHead(FastRCNNConvFCHead):
    """detectron2's conv+fc box head; `norm` (anything NormSpec.of takes) after each conv and
    `ws` (bool or WSSpec) on the convs."""

    @configurable
    def __init__(self, input_shape, *, conv_dims, fc_dims, norm="", ws=False):
        spec = ConvNormSpec.of(norm, ws)
        super().__init__(input_shape, conv_dims=conv_dims, fc_dims=fc_dims,
                         conv_norm=norm_arg(spec.norm, "roi_heads.box_head.conv"))
        convert_to_ws(self, spec.ws)  # the convs (and conv_norm_relus, which lists them); fcs stay

    @classmethod
    def from_config(cls, cfg, input_shape):
        return _with_component_norm(super().from_config(cfg, input_shape), cfg, "BOX_HEAD")


@ROI_MASK_HEAD_REGISTRY.register()
class GNMaskRCNNConvUpsampleHead(MaskRCNNConvUpsampleHead):
    """detectron2's mask head; `norm` after each 3x3 conv and `ws` on them (the deconv and the
    1x1 predictor stay plain)."""

    @configurable
    def __init__(self, input_shape, *, num_classes, conv_dims, norm="", ws=False, **kwargs):
        spec = ConvNormSpec.of(norm, ws)
        super().__init__(input_shape, num_classes=num_classes, conv_dims=conv_dims,
                         conv_norm=norm_arg(spec.norm, "roi_heads.mask_head.mask_fcn"), **kwargs)
        convert_to_ws(self, spec.ws, exclude=[self.predictor])

    @classmethod
    def from_config(cls, cfg, input_shape):
        return _with_component_norm(super().from_config(cfg, input_shape), cfg, "MASK_HEAD")
