"""Weight Standardization (Qiao et al. 2019; BiT): WSSpec, WSConv2d and fold_ws.

WSConv2d standardizes each output filter over (in, kh, kw) before convolving, so GN's
batch-independence extends to the weights. Two conventions exist and pretrained weights depend on
which one they were trained with:
- "timm" (BiT / timm StdConv2d): biased variance, eps inside the sqrt: (w - m) / sqrt(var + eps);
- "mmcv" (the paper's code / mmcv ConvWS2d): unbiased std, eps added to it: (w - m) / (std + eps).

The standardized weight is computed in fp32 from the fp32 weight and handed to the conv in the
dtype and memory format the conv runs in (the autocast dtype, channels_last for a channels_last
input), cast once where it is computed, not by autocast on every call. Within `ws_step_cache()`
(a training step's forward) each WSConv2d computes it once and reuses it for every later call in
that forward, as RetinaNet's head does for its five FPN levels.
"""
import contextlib
import dataclasses
import math
import threading

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d

from .layout import is_channels_last

WS_STYLES = {"timm": 1e-6, "mmcv": 1e-5}  # style -> its library's default eps


@dataclasses.dataclass(frozen=True)
class WSSpec:
    """Weight Standardization as data: on/off, convention, eps (0 = the convention's default)."""

    enabled: bool = False
    style: str = "timm"
    eps: float = 0.0

    def __post_init__(self):
        style = str(self.style).lower()
        if style not in WS_STYLES:
            raise ValueError(f"unknown WS style {self.style!r}; valid: {', '.join(WS_STYLES)}")
        object.__setattr__(self, "style", style)
        if self.eps < 0:
            raise ValueError(f"WS eps must be >= 0 (0 = the {style} default), got {self.eps}")

    @property
    def effective_eps(self) -> float:
        return self.eps or WS_STYLES[self.style]

    def __bool__(self):
        return bool(self.enabled)


def standardize_weight(weight: torch.Tensor, style: str = "timm", eps: float = 1e-6,
                       exact: bool = True) -> torch.Tensor:
    """Standardize each output filter of a conv weight (out, in, kh, kw) over its other axes;
    the result has the weight's memory format. Formulations picked by `tools/benchmark.py ws`
    (docs/PERFORMANCE.md). `exact=False` allows a faster formulation whose rounding differs
    (for a result that is rounded to bf16 / fp16 anyway)."""
    flat, unflatten = _filters(weight)
    if style == "timm" and not exact:
        # The same formula as F.layer_norm over each filter: ~1.5x faster forward + backward
        # on CPU; it differs from timm's rounding by ~1e-6, far below bf16's 4e-3.
        return unflatten(F.layer_norm(flat, flat.shape[1:], eps=eps))
    if style == "timm":
        # One fused op, timm's own: F.batch_norm over a (1, out, -1) view (biased variance, eps
        # inside the sqrt). F.layer_norm over each filter is the same formula and faster on CPU,
        # but its different summation order drifts past 1e-4 from timm's StdConv2d after the 53
        # convs of a ResNet-50 (tests/checkpoint/test_weights.py), so pretrained GN+WS weights
        # would not reproduce exactly: kept out.
        return unflatten(F.batch_norm(flat.unsqueeze(0), None, None, training=True,
                                      momentum=0.0, eps=eps))
    if style == "mmcv":
        # Unbiased std as torch.std, computed in two vectorized passes (mean, then the norm of
        # the deviations) rather than torch.std_mean's slower Welford pass.
        centered = flat - flat.mean(dim=1, keepdim=True)
        std = torch.linalg.vector_norm(centered, dim=1, keepdim=True) / math.sqrt(
            flat.shape[1] - 1)
        return unflatten(centered / (std + eps))
    raise ValueError(f"unknown WS style {style!r}; valid: {', '.join(WS_STYLES)}")


def _filters(weight: torch.Tensor):
    """(out, -1) view of a conv weight with each filter's values in memory order, and the
    function that turns such a (out, -1) tensor back into the weight's shape and memory format
    (mean and variance do not depend on the order, so a channels_last weight needs no copy)."""
    if is_channels_last(weight):
        nhwc = weight.permute(0, 2, 3, 1)
        return nhwc.reshape(weight.shape[0], -1), lambda f: f.view(nhwc.shape).permute(0, 3, 1, 2)
    return weight.reshape(weight.shape[0], -1), lambda f: f.reshape(weight.shape)


class _StepCache(threading.local):
    entries = None  # dict while a ws_step_cache() block runs in this thread


_STEP_CACHE = _StepCache()


@contextlib.contextmanager
def ws_step_cache():
    """While in the block, every WSConv2d standardizes its weight once (at its first call) and
    reuses that tensor, graph included, for later calls: one computation per forward pass however
    often a conv is applied. Enter it around one forward pass only (a training micro-step's);
    the backward then runs through each cached tensor once, and the next micro-step's block
    computes fresh ones. Blocks nest (the inner one reuses the outer one's)."""
    if _STEP_CACHE.entries is not None:
        yield
        return
    _STEP_CACHE.entries = {}
    try:
        yield
    finally:
        _STEP_CACHE.entries = None


def conv_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a conv with this weight computes in here: autocast's where it is on for the
    weight's device (conv is on autocast's lower-precision list), else the weight's own."""
    device = weight.device.type
    if weight.is_floating_point() and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _memory_format(like: Optional[torch.Tensor], weight: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels_last input (oneDNN / cuDNN then run the NHWC kernels without
    reordering the weight), contiguous for an NCHW one, the weight's own without an input."""
    channels_last = is_channels_last(like if like is not None else weight)
    return torch.channels_last if channels_last else torch.contiguous_format


class WSConv2d(Conv2d):
    """Drop-in for `detectron2.layers.Conv2d` (keeps its `norm` and `activation` kwargs) whose
    weight is standardized on every forward that trains it (once per `ws_step_cache()` block).

    Where no gradient can reach the weight (eval / no_grad, or a frozen weight), the
    standardized weight is cached and reused while the weight is unchanged: the cache is keyed on
    the weight's storage and version counter, which every in-place update (optimizer step,
    load_state_dict, copy_) bumps, and on the dtype and memory format the conv runs in. Updates
    made through `weight.data` bypass the counter: call `clear_ws_cache()` after them (or
    `fold_ws` the model for deployment).
    """

    def __init__(self, *args, ws_style: str = "timm", ws_eps: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        spec = WSSpec(True, ws_style, ws_eps)
        self.ws_style = spec.style
        self.ws_eps = spec.effective_eps
        self._ws_cache = None  # (weight alias, (version, inference mode, dtype, format), result)

    def standardized_weight(self, like: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The standardized weight, in the dtype the conv computes in (conv_dtype) and in the
        memory format that suits input `like` (the weight's own when None)."""
        w = self.weight
        dtype, memory_format = conv_dtype(w), _memory_format(like, w)
        if _compiling():
            return self._standardize(dtype, memory_format)
        if w.requires_grad and torch.is_grad_enabled():
            entries = _STEP_CACHE.entries
            if entries is None:
                return self._standardize(dtype, memory_format)
            key = (id(self), w._version, dtype, memory_format)
            if key not in entries:
                entries[key] = self._standardize(dtype, memory_format)
            return entries[key]
        # The alias keeps the cached weight's storage alive, so no other tensor can reuse its
        # address; inference-mode results are reused only in inference mode (autograd rejects
        # inference tensors elsewhere).
        key = (w._version, torch.is_inference_mode_enabled(), dtype, memory_format)
        cache = self._ws_cache
        if cache is not None and cache[0].data_ptr() == w.data_ptr() and cache[1] == key \
                and cache[0].shape == w.shape and cache[0].dtype == w.dtype \
                and cache[0].device == w.device:
            return cache[2]
        with torch.no_grad():
            result = self._standardize(dtype, memory_format)
        self._ws_cache = (w.detach(), key, result)
        return result

    def _standardize(self, dtype: torch.dtype, memory_format: torch.memory_format):
        # Statistics in fp32 (or the weight's dtype if wider), then one cast + reorder.
        w = self.weight
        if w.dtype in (torch.float16, torch.bfloat16):
            w = w.float()
        exact = dtype not in (torch.bfloat16, torch.float16)
        out = standardize_weight(w, self.ws_style, self.ws_eps, exact=exact)
        return out.to(dtype=dtype, memory_format=memory_format)

    def clear_ws_cache(self):
        """Forget the cached standardized weight (see the class docstring)."""
        self._ws_cache = None

    def train(self, mode: bool = True):
        self.clear_ws_cache()  # a mode switch usually precedes weight updates or deployment
        return super().train(mode)

    def forward(self, x):
        x = self._conv_forward(x, self.standardized_weight(x), self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def extra_repr(self):
        return f"{super().extra_repr()}, ws_style={self.ws_style}, ws_eps={self.ws_eps:g}"


def _compiling() -> bool:
    """True while torch.compile traces (the cache's pointer checks would break its graph)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling")
                and compiler.is_compiling())


def swap_modules(root: nn.Module, make) -> nn.Module:
    """Replace, in place, every submodule `m` for which `make(m)` returns a module, wherever
    `root` refers to it: as a child, and in plain list attributes (detectron2's FPN keeps its
    convs in lists that forward uses). `make` returns None to keep `m` and recurse into it.
    Returns `root`, or its replacement when `root` itself is replaced."""
    replaced = {}

    def visit(module):
        for name, child in list(module.named_children()):
            new = replaced.get(id(child)) or make(child)
            if new is None:
                visit(child)
            else:
                replaced[id(child)] = new
                setattr(module, name, new)
        for name, value in list(vars(module).items()):
            if isinstance(value, list) and any(id(v) in replaced for v in value):
                setattr(module, name, [replaced.get(id(v), v) for v in value])

    top = make(root)
    if top is not None:
        return top
    visit(root)
    return root


def fold_ws(model: nn.Module) -> nn.Module:
    """Replace every WSConv2d in `model` (in place) by a plain detectron2 Conv2d holding the
    standardized weight, for inference and export. Returns `model`."""
    return swap_modules(model, lambda m: _folded(m) if isinstance(m, WSConv2d) else None)


def _folded(conv: WSConv2d) -> Conv2d:
    plain = Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                   padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                   bias=conv.bias is not None, padding_mode=conv.padding_mode,
                   norm=conv.norm, activation=conv.activation,
                   device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(conv.standardized_weight())
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    for name, param in plain.named_parameters(recurse=False):  # frozen stays frozen
        param.requires_grad_(getattr(conv, name).requires_grad)
    plain.train(conv.training)
    return plain

