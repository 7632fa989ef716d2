"""gn_det's building blocks: the norm builder (and the small-batch norms it builds besides
torch's and detectron2's), the WS conv and the conv builder."""
from .batch_renorm import BatchRenorm2d, RenormSchedule
from .conv import ConvNormSpec, build_conv, convert_to_ws, norm_arg
from .group_norm import GroupNorm
from .norm import (GROUP_NORM_TYPES, GROUPED_TYPES, NORM_TYPES, NormSpec, build_norm,
                   canonical_norm_type, detectron2_layer_norm)
from .timm_norms import TIMM_NORMS, timm_norm_types
from .ws_conv import (WS_STYLES, WSConv2d, WSSpec, fold_ws, standardize_weight,
                      ws_step_cache)

__all__ = [k for k in globals() if not k.startswith("_")]
