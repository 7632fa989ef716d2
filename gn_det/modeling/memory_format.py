"""MODEL.CHANNELS_LAST: run the backbone, and so the FPN and heads after it, on channels_last
(NHWC) activations on CPU, where oneDNN's NHWC convolutions outweigh GroupNorm's slower NHWC
kernel (docs/PERFORMANCE.md). Off by default; CUDA inputs are left as they are (not measured)."""
import torch
from torch import nn


def _to_channels_last(module: nn.Module, args: tuple):
    """Forward pre-hook: a CPU NCHW image batch becomes channels_last; anything else passes."""
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == "cpu":
        return (x.contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return None


def apply_channels_last(backbone: nn.Module, enabled: bool) -> nn.Module:
    """Give `backbone` the channels_last input hook when `enabled` (a module-level hook, so the
    model still deep-copies and pickles). Returns `backbone`."""
    if enabled:
        backbone.register_forward_pre_hook(_to_channels_last)
    return backbone
