"""The batch-independent norms gn_det takes from timm's layers, unchanged: Filter Response
Normalization with its TLU (Singh & Krishnan, CVPR 2020; timm's FilterResponseNormTlu2d) and
EvoNorm-S0 (Liu et al., NeurIPS 2020; timm's EvoNorm2dS0, grouped like GN).

Both carry their own nonlinearity (TLU: max(y, tau); S0: x * sigmoid(v * x) / group std), which
they keep: the components built from detectron2's blocks still apply their ReLU after the norm (a
TLU followed by a ReLU is a TLU with tau >= 0), and the last norm of a residual block acts before
the addition, unlike timm's own networks.

timm is an optional dependency (pip install timm, or gn_det's [dev] extra): it is imported when a
norm is built, and the names are refused in one line where it is missing (`check_available`).
"""
import importlib
import importlib.util
from typing import Dict, Tuple

from torch import nn

# gn_det's norm name -> the class in timm.layers
TIMM_NORMS: Dict[str, str] = {"FRN": "FilterResponseNormTlu2d", "EvoNormS0": "EvoNorm2dS0"}


def timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


def check_available(name: str) -> None:
    """A one-line error for norm `name` (a key of TIMM_NORMS) where timm is not installed."""
    if not timm_available():
        raise ValueError(f"norm type {name!r} is timm's {TIMM_NORMS[name]}, and timm is not "
                         f"installed: pip install timm (or pip install -e '.[dev]'), or use GN")


def timm_norm_class(name: str) -> type:
    """The timm class behind gn_det's norm `name`."""
    check_available(name)
    layers = importlib.import_module("timm.layers")  # optional dependency: imported on use
    return getattr(layers, TIMM_NORMS[name])


def timm_norm_types() -> Tuple[type, ...]:
    """The module classes of every timm norm gn_det builds (none without timm)."""
    return tuple(timm_norm_class(n) for n in TIMM_NORMS) if timm_available() else ()


def build_timm_norm(name: str, channels: int, eps: float, groups: int = 0) -> nn.Module:
    """FRN + TLU over `channels`, or EvoNorm-S0 with `groups` groups (both with their
    activation, as the papers define them)."""
    cls = timm_norm_class(name)
    if name == "EvoNormS0":
        return cls(channels, groups=groups, apply_act=True, eps=eps)
    return cls(channels, apply_act=True, eps=eps)
