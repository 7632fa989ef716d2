"""channels_last (NHWC) for a detector: MODEL.CHANNELS_LAST, and what the bf16 / fp16 precisions
turn on (gn_det.engine.precision).

`apply_channels_last` gives a backbone a forward pre-hook that makes its image batch
channels_last, so every activation after it is NHWC (convolutions, GN, ReLU, max-pool, FPN's
upsample and add and the heads all keep the layout: no reorder between layers). `to_channels_last`
does that for a whole detector and also lays its conv weights out NHWC (oneDNN and cuDNN then use
them without a reorder per call) and gives its GroupNorms the fast channels_last backward of
gn_det.layers.GroupNorm. On CPU, bf16 convolutions are ~3.5x faster NHWC than NCHW, fp32 ones
about the same; GroupNorm's own channels_last kernel is slower (docs/PERFORMANCE.md), hence the
precision turns it on with bf16 / fp16 and MODEL.CHANNELS_LAST is an opt-in for fp32.
"""
import torch
from torch import nn

from ..layers.group_norm import use_fast_group_norm


def _to_channels_last(module: nn.Module, args: tuple):
    """Forward pre-hook: a 4D image batch becomes channels_last; anything else passes."""
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return None


def has_channels_last_hook(module: nn.Module) -> bool:
    return any(h is _to_channels_last for h in module._forward_pre_hooks.values())


def apply_channels_last(backbone: nn.Module, enabled: bool) -> nn.Module:
    """Give `backbone` the channels_last input hook when `enabled` (once; a module-level hook, so
    the model still deep-copies and pickles). Returns `backbone`."""
    if enabled and not has_channels_last_hook(backbone):
        backbone.register_forward_pre_hook(_to_channels_last)
    return backbone


def to_channels_last(model: nn.Module) -> nn.Module:
    """Lay `model`'s 4D parameters and buffers out channels_last, give its backbone (a detectron2
    meta-architecture's `backbone`, else the model itself) the input hook, and its GroupNorms the
    fast channels_last backward; in place (the same Parameter objects), idempotent. Returns
    `model`."""
    model.to(memory_format=torch.channels_last)
    apply_channels_last(getattr(model, "backbone", model), True)
    use_fast_group_norm(model)
    return model
