"""Weight Standardization (Qiao et al. 2019; BiT): WSSpec, WSConv2d and fold_ws.

WSConv2d standardizes each output filter over (in, kh, kw) before convolving, so GN's
batch-independence extends to the weights. Two conventions exist and pretrained weights depend on
which one they were trained with:
- "timm" (BiT / timm StdConv2d): biased variance, eps inside the sqrt: (w - m) / sqrt(var + eps);
- "mmcv" (the paper's code / mmcv ConvWS2d): unbiased std, eps added to it: (w - m) / (std + eps).
"""
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d

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


def standardize_weight(weight: torch.Tensor, style: str = "timm",
                       eps: float = 1e-6) -> torch.Tensor:
    """Standardize each output filter of a conv weight (out, in, kh, kw) over its other axes.
    Formulations picked by `tools/benchmark.py ws` (docs/PERFORMANCE.md)."""
    flat = weight.reshape(weight.shape[0], -1)
    if style == "timm":
        # One fused op, timm's own: F.batch_norm over a (1, out, -1) view (biased variance, eps
        # inside the sqrt). F.layer_norm over each filter is the same formula and faster on CPU,
        # but its different summation order drifts past 1e-4 from timm's StdConv2d after the 53
        # convs of a ResNet-50 (tests/checkpoint/test_weights.py), so pretrained GN+WS weights
        # would not reproduce exactly: kept out.
        return F.batch_norm(flat.unsqueeze(0), None, None, training=True, momentum=0.0,
                            eps=eps).reshape_as(weight)
    if style == "mmcv":
        # Unbiased std as torch.std, computed in two vectorized passes (mean, then the norm of
        # the deviations) rather than torch.std_mean's slower Welford pass.
        centered = flat - flat.mean(dim=1, keepdim=True)
        std = torch.linalg.vector_norm(centered, dim=1, keepdim=True) / math.sqrt(
            flat.shape[1] - 1)
        return (centered / (std + eps)).reshape_as(weight)
    raise ValueError(f"unknown WS style {style!r}; valid: {', '.join(WS_STYLES)}")


class WSConv2d(Conv2d):
    """Drop-in for `detectron2.layers.Conv2d` (keeps its `norm` and `activation` kwargs) whose
    weight is standardized on every forward that trains it.

    Where no gradient can reach the weight (eval / no_grad, or a frozen weight), the
    standardized weight is cached and reused while the weight is unchanged: the cache is keyed on
    the weight's storage and version counter, which every in-place update (optimizer step,
    load_state_dict, copy_) bumps. Updates made through `weight.data` bypass the counter: call
    `clear_ws_cache()` after them (or `fold_ws` the model for deployment).
    """

    def __init__(self, *args, ws_style: str = "timm", ws_eps: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        spec = WSSpec(True, ws_style, ws_eps)
        self.ws_style = spec.style
        self.ws_eps = spec.effective_eps
        self._ws_cache = None  # (weight alias, its version, inference mode, standardized)

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        if (w.requires_grad and torch.is_grad_enabled()) or _compiling():
            return standardize_weight(w, self.ws_style, self.ws_eps)
        # The alias keeps the cached weight's storage alive, so no other tensor can reuse its
        # address; inference-mode results are reused only in inference mode (autograd rejects
        # inference tensors elsewhere).
        key = (w._version, torch.is_inference_mode_enabled())
        cache = self._ws_cache
        if cache is not None and cache[0].data_ptr() == w.data_ptr() and cache[1:3] == key \
                and cache[0].shape == w.shape and cache[0].dtype == w.dtype \
                and cache[0].device == w.device:
            return cache[3]
        with torch.no_grad():
            result = standardize_weight(w, self.ws_style, self.ws_eps)
        self._ws_cache = (w.detach(), *key, result)
        return result

    def clear_ws_cache(self):
        """Forget the cached standardized weight (see the class docstring)."""
        self._ws_cache = None

    def train(self, mode: bool = True):
        self.clear_ws_cache()  # a mode switch usually precedes weight updates or deployment
        return super().train(mode)

    def forward(self, x):
        x = self._conv_forward(x, self.standardized_weight(), self.bias)
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

