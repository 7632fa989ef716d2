"""A guard for CPU bf16 autocast: strided convolutions with a one-pixel-wide output run in fp32.

Why: oneDNN's bf16 conv weight gradient on CPU (seen in torch 2.14.1) returns uninitialized
memory (1e14 .. 1e37, or NaN) when stride > 1 and the output is one pixel wide; the forward and
the input gradient are right. RetinaNet's P6/P7 convs meet that on small (or very elongated)
images, so one bf16 step can silently wreck their weights. No probe decides whether to apply it:
the wrong values are whatever memory held, so a probe can pass by chance (seen: three right
answers in a row); the fp32 convs it costs are a few one-pixel-wide maps, inside the training step.
"""
import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def one_pixel_wide_strided(input, weight, stride=1, padding=0, dilation=1) -> bool:
    """Whether F.conv2d(input, weight, stride=..., ...) has stride > 1 and a 1-pixel-wide output
    (the case the bug needs; a 1x1 kernel never showed it)."""
    if input.dim() < 3 or weight.shape[-1] == 1:
        return False
    stride, dilation = _pair(stride), _pair(dilation)
    if max(stride) == 1:
        return False
    pad_w = 0 if isinstance(padding, str) else _pair(padding)[1]
    span = dilation[1] * (weight.shape[-1] - 1) + 1
    return (input.shape[-1] + 2 * pad_w - span) // stride[1] + 1 == 1


class _Fp32ForOnePixelWideStridedConv(TorchFunctionMode):
    """While active, F.conv2d calls that match one_pixel_wide_strided run in fp32 outside
    autocast (the output is fp32; later ops autocast it again)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and len(args) >= 2 and torch.is_tensor(args[0]) and \
                args[0].device.type == "cpu":
            names = ("bias", "stride", "padding", "dilation", "groups")
            opts = dict(zip(names, args[2:]), **kwargs)
            if one_pixel_wide_strided(args[0], args[1], opts.get("stride", 1),
                                      opts.get("padding", 0), opts.get("dilation", 1)):
                bias = opts.pop("bias", None)
                with torch.autocast("cpu", enabled=False):
                    return func(args[0].float(), args[1].float(),
                                None if bias is None else bias.float(), **opts)
        return func(*args, **kwargs)


def cpu_bf16_guard(device_type: str, dtype: torch.dtype):
    """The context a training step's forward runs in: the fp32 fallback where autocast is CPU
    bf16, else nothing."""
    if device_type == "cpu" and dtype == torch.bfloat16:
        return _Fp32ForOnePixelWideStridedConv()
    return contextlib.nullcontext()
