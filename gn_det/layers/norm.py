"""NormSpec and build_norm: the one place where a norm kind (data, or a callable) becomes a module.

Every name detectron2's `get_norm` knows builds the module detectron2 builds: BN, SyncBN (and its
spelling nnSyncBN), FrozenBN, GN, naiveSyncBN, naiveSyncBN_N and LN, detectron2 main's per-pixel
LayerNorm over channels (eps 1e-6; refused in one line where detectron2 has no LayerNorm, as
v0.6). gn_det adds LN_CHW, the GN paper's LN (one group over C, H, W), and IN (one channel per
group); with GN they are `nn.GroupNorm` (fused `F.group_norm`), so detectron2's WEIGHT_DECAY_NORM
and freezing logic recognise them. The other small-batch norms: BRN, Batch Renormalization
(gn_det.layers.batch_renorm, an nn.BatchNorm2d), and from timm's layers FRN (Filter Response
Normalization with TLU) and EvoNormS0 (grouped like GN): gn_det.layers.timm_norms. A callable
`channels -> module` is built as is (LazyConfig passes norms that way).
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Union

import torch.distributed as dist
from torch import nn

import detectron2.layers.batch_norm as d2_batch_norm
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm

from .batch_renorm import BatchRenorm2d
from .timm_norms import TIMM_NORMS, build_timm_norm, check_available

NORM_TYPES = ("", "BN", "SyncBN", "FrozenBN", "GN", "naiveSyncBN", "naiveSyncBN_N", "LN",
              "LN_CHW", "IN", "BRN", "FRN", "EvoNormS0")
GROUP_NORM_TYPES = ("GN", "LN_CHW", "IN")
GROUPED_TYPES = GROUP_NORM_TYPES + ("EvoNormS0",)  # norms over channel groups (NUM_GROUPS applies)
CALLABLE = "callable"  # the type of a NormSpec made from a callable; not a name configs may use
_ALIASES = {t.lower(): t for t in NORM_TYPES if t}
# detectron2's nnSyncBN is its SyncBN (torch's SyncBatchNorm) by another name.
_ALIASES.update({"": "", "none": "", "nnsyncbn": "SyncBN", "syncbatchnorm": "SyncBN",
                 "frozenbatchnorm": "FrozenBN", "batchrenorm": "BRN", "frn_tlu": "FRN",
                 "evonorm_s0": "EvoNormS0", "evonorm-s0": "EvoNormS0"})
DEFAULT_NUM_GROUPS = 32
DEFAULT_EPS = {"LN": 1e-6}  # detectron2's LayerNorm default; every other type: 1e-5


def detectron2_layer_norm() -> Optional[type]:
    """detectron2's per-pixel channel LayerNorm (what its get_norm builds for "LN"), or None
    where this detectron2 has none (v0.6)."""
    return getattr(d2_batch_norm, "LayerNorm", None)


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """A norm kind as data, or a callable `channels -> module` (`NormSpec(fn)`; then only
    `factory` matters). For GN, set at most one of num_groups / channels_per_group (0 = unset;
    both unset means 32 groups, the paper's default). eps None = the layer's default."""

    type: Union[str, Callable[[int], nn.Module]] = ""
    num_groups: int = 0
    channels_per_group: int = 0
    eps: Optional[float] = None
    affine: bool = True
    factory: Optional[Callable[[int], nn.Module]] = None

    def __post_init__(self):
        if callable(self.type) or self.factory is not None:
            factory = self.type if callable(self.type) else self.factory
            if self.type not in ("", CALLABLE) and not callable(self.type):
                raise ValueError(f"norm {self.type!r} and a factory are both set; set one")
            object.__setattr__(self, "factory", factory)
            object.__setattr__(self, "type", CALLABLE)
            return
        canonical = canonical_norm_type(self.type)
        object.__setattr__(self, "type", canonical)
        if self.eps is None:
            object.__setattr__(self, "eps", DEFAULT_EPS.get(canonical, 1e-5))
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
    def of(cls, spec: Union["NormSpec", str, Mapping[str, Any], Callable, None]) -> "NormSpec":
        """Accept a NormSpec, a type string ('GN'), a dict ({'type': 'GN', 'num_groups': 16}),
        a callable `channels -> module` (as detectron2's get_norm does) or None (no norm)."""
        if isinstance(spec, NormSpec):
            return spec
        if spec is None:
            return cls("")
        if isinstance(spec, str) or callable(spec):
            return cls(spec)
        if isinstance(spec, Mapping):
            return cls(**{k.lower(): v for k, v in spec.items()})
        raise TypeError(f"cannot make a NormSpec from {type(spec).__name__}: {spec!r}")

    def __bool__(self):
        return bool(self.type)

    def describe(self) -> str:
        """The type for logs: 'GN', 'none', or 'callable(<name>)'."""
        if self.factory is not None:
            name = getattr(self.factory, "__name__", None) or type(self.factory).__name__
            return f"{CALLABLE}({name})"
        return self.type or "none"

    def groups_for(self, channels: int, layer: str = "?") -> int:
        """Number of groups this spec gives a GN/LN_CHW/IN/EvoNormS0 over `channels`,
        validated."""
        if self.type == "LN_CHW":
            return 1
        if self.type == "IN":
            return channels
        if self.channels_per_group:
            if channels % self.channels_per_group:
                raise ValueError(
                    f"layer {layer}: {self.type} with channels_per_group="
                    f"{self.channels_per_group} needs C={channels} divisible by it; valid "
                    f"channels_per_group for C={channels}: {_divisors(channels)}")
            return channels // self.channels_per_group
        groups = self.num_groups or DEFAULT_NUM_GROUPS
        if channels % groups:
            raise ValueError(
                f"layer {layer}: {self.type} with G={groups} groups needs C={channels} divisible "
                f"by G; valid group counts for C={channels}: {_divisors(channels)}")
        return groups


def _divisors(n: int):
    return [d for d in range(1, n + 1) if n % d == 0]


def canonical_norm_type(name: Optional[str]) -> str:
    """Map a user-written norm name (case-insensitive, 'none' = no norm) to its canonical form;
    'LN' only where detectron2 has its LayerNorm."""
    key = (name or "").strip().lower() if isinstance(name, str) or name is None else None
    if key not in _ALIASES:
        raise ValueError(f"unknown norm type {name!r}; valid: none, "
                         + ", ".join(t for t in NORM_TYPES if t)
                         + " (nnSyncBN = SyncBN; LN_CHW is the GN paper's LN; BRN is Batch "
                         "Renormalization; FRN is FRN + TLU)")
    if _ALIASES[key] == "LN" and detectron2_layer_norm() is None:
        raise ValueError(
            f"norm type {name!r} is detectron2's per-pixel LayerNorm over channels "
            f"(detectron2.layers.batch_norm.LayerNorm, eps 1e-6), which this detectron2 lacks "
            f"(it came after v0.6): install detectron2 from git main, or use LN_CHW for the GN "
            f"paper's LN (GroupNorm(1, C), over C, H, W)")
    if _ALIASES[key] in TIMM_NORMS:
        check_available(_ALIASES[key])
    return _ALIASES[key]


def build_norm(spec, channels: int, layer: str = "?") -> Optional[nn.Module]:
    """Build the norm module for `channels` from `spec` (see NormSpec.of); None for no norm.
    `layer` names the layer in error messages."""
    spec = NormSpec.of(spec)
    t = spec.type
    if t == "":
        return None
    if spec.factory is not None:
        module = spec.factory(channels)
        if not isinstance(module, nn.Module):
            raise TypeError(f"layer {layer}: the norm callable {spec.describe()} returned "
                            f"{type(module).__name__}, expected an nn.Module")
        return module
    if t in GROUP_NORM_TYPES:
        return nn.GroupNorm(spec.groups_for(channels, layer), channels, eps=spec.eps,
                            affine=spec.affine)
    if t == "BN":
        return nn.BatchNorm2d(channels, eps=spec.eps, affine=spec.affine)
    if t == "FrozenBN":
        return FrozenBatchNorm2d(channels, eps=spec.eps)
    if t == "BRN":
        return BatchRenorm2d(channels, eps=spec.eps, affine=spec.affine)
    if t in TIMM_NORMS:
        if not spec.affine:
            raise ValueError(f"layer {layer}: {t} always has an affine (timm's "
                             f"{TIMM_NORMS[t]}); use GN for a norm without one")
        groups = spec.groups_for(channels, layer) if t in GROUPED_TYPES else 0
        return build_timm_norm(t, channels, spec.eps, groups)
    if t in ("naiveSyncBN", "naiveSyncBN_N"):  # one process: plain BN (detectron2's fallback)
        return NaiveSyncBatchNorm(channels, eps=spec.eps, affine=spec.affine,
                                  stats_mode="N" if t == "naiveSyncBN_N" else "")
    if t == "LN":
        if not spec.affine:
            raise ValueError(f"layer {layer}: detectron2's LN always has an affine; use "
                             f"LN_CHW or GN for one without")
        return detectron2_layer_norm()(channels, eps=spec.eps)
    # SyncBN: statistics are reduced over a process group, which must exist when the model is built.
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"layer {layer}: SyncBN needs a torch.distributed process group (train with "
            f"--num-gpus > 1 on GPUs); for one process use BN, or GN, which needs no "
            f"synchronization across devices")
    return nn.SyncBatchNorm(channels, eps=spec.eps, affine=spec.affine)
