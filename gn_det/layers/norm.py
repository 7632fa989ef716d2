"""NormSpec and build_norm: the one place where a norm kind (data) becomes a module.

GN, LN and IN are all `nn.GroupNorm` (fused `F.group_norm`): LN is GN with one group, IN is GN
with one channel per group (per-channel affine). Keeping them `nn.GroupNorm` instances lets
detectron2's WEIGHT_DECAY_NORM and freezing logic recognise them.
"""
import dataclasses
from typing import Any, Mapping, Optional, Union

import torch.distributed as dist
from torch import nn

from detectron2.layers import FrozenBatchNorm2d

NORM_TYPES = ("", "BN", "SyncBN", "FrozenBN", "GN", "LN", "IN")
GROUP_NORM_TYPES = ("GN", "LN", "IN")
_ALIASES = {t.lower(): t for t in NORM_TYPES if t}
_ALIASES.update({"": "", "none": "", "syncbatchnorm": "SyncBN", "frozenbatchnorm": "FrozenBN",
                 "naivesyncbn": "SyncBN", "nnsyncbn": "SyncBN"})  # detectron2's spellings
DEFAULT_NUM_GROUPS = 32


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """A norm kind as data. For GN, set at most one of num_groups / channels_per_group (0 = unset;
    both unset means 32 groups, the paper's default)."""

    type: str = ""
    num_groups: int = 0
    channels_per_group: int = 0
    eps: float = 1e-5
    affine: bool = True

    def __post_init__(self):
        canonical = canonical_norm_type(self.type)
        object.__setattr__(self, "type", canonical)
        if self.num_groups < 0 or self.channels_per_group < 0:
            raise ValueError(f"norm {self.type}: num_groups={self.num_groups} and "
                             f"channels_per_group={self.channels_per_group} must be >= 0")
        if self.num_groups and self.channels_per_group:
            raise ValueError(
                f"norm {self.type}: num_groups={self.num_groups} and channels_per_group="
                f"{self.channels_per_group} are both set; set one of them (the other to 0)")
        if not self.eps > 0:
            raise ValueError(f"norm {self.type}: eps must be > 0, got {self.eps}")

    @classmethod
    def of(cls, spec: Union["NormSpec", str, Mapping[str, Any], None]) -> "NormSpec":
        """Accept a NormSpec, a type string ('GN'), a dict ({'type': 'GN', 'num_groups': 16})
        or None (no norm)."""
        if isinstance(spec, NormSpec):
            return spec
        if spec is None:
            return cls("")
        if isinstance(spec, str):
            return cls(spec)
        if isinstance(spec, Mapping):
            return cls(**{k.lower(): v for k, v in spec.items()})
        raise TypeError(f"cannot make a NormSpec from {type(spec).__name__}: {spec!r}")

    def __bool__(self):
        return bool(self.type)

    def groups_for(self, channels: int, layer: str = "?") -> int:
        """Number of groups this spec gives a GN/LN/IN over `channels`, validated."""
        if self.type == "LN":
            return 1
        if self.type == "IN":
            return channels
        if self.channels_per_group:
            if channels % self.channels_per_group:
                raise ValueError(
                    f"layer {layer}: GN with channels_per_group={self.channels_per_group} needs "
                    f"C={channels} divisible by it; valid channels_per_group for C={channels}: "
                    f"{_divisors(channels)}")
            return channels // self.channels_per_group
        groups = self.num_groups or DEFAULT_NUM_GROUPS
        if channels % groups:
            raise ValueError(
                f"layer {layer}: GN with G={groups} groups needs C={channels} divisible by G; "
                f"valid group counts for C={channels}: {_divisors(channels)}")
        return groups


def _divisors(n: int):
    return [d for d in range(1, n + 1) if n % d == 0]


def canonical_norm_type(name: Optional[str]) -> str:
    """Map a user-written norm name (case-insensitive, 'none' = no norm) to its canonical form."""
    key = (name or "").strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown norm type {name!r}; valid: none, "
                         + ", ".join(t for t in NORM_TYPES if t))
    return _ALIASES[key]


def build_norm(spec, channels: int, layer: str = "?") -> Optional[nn.Module]:
    """Build the norm module for `channels` from `spec` (see NormSpec.of); None for no norm.
    `layer` names the layer in error messages."""
    spec = NormSpec.of(spec)
    t = spec.type
    if t == "":
        return None
    if t in GROUP_NORM_TYPES:
        return nn.GroupNorm(spec.groups_for(channels, layer), channels, eps=spec.eps,
                            affine=spec.affine)
    if t == "BN":
        return nn.BatchNorm2d(channels, eps=spec.eps, affine=spec.affine)
    if t == "FrozenBN":
        return FrozenBatchNorm2d(channels, eps=spec.eps)
    # SyncBN: statistics are reduced over a process group, which must exist when the model is built.
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"layer {layer}: SyncBN needs a torch.distributed process group (train with "
            f"--num-gpus > 1 on GPUs); for one process use BN, or GN, which needs no "
            f"synchronization across devices")
    return nn.SyncBatchNorm(channels, eps=spec.eps, affine=spec.affine)
