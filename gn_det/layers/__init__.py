"""gn_det's building blocks: the norm builder, the WS conv and the conv builder."""
from .conv import ConvNormSpec, build_conv, convert_to_ws, norm_arg
from .group_norm import GroupNorm
from .norm import (GROUP_NORM_TYPES, NORM_TYPES, NormSpec, build_norm, canonical_norm_type,
                   detectron2_layer_norm)
from .ws_conv import (WS_STYLES, WSConv2d, WSSpec, fold_ws, standardize_weight,
                      ws_step_cache)

__all__ = [k for k in globals() if not k.startswith("_")]
