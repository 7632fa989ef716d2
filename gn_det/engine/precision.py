"""One precision setting for training and inference (MODEL.PRECISION, LazyConfig
`train.precision`): fp32, bf16, fp16 (CUDA only), or auto.

auto is bf16 on a CPU with bf16 matrix units (AMX-BF16 or AVX-512 BF16, read from the CPU's
feature flags, never its model name) and fp32 on any other CPU; on CUDA it is fp32, or fp16 with
detectron2's SOLVER.AMP.ENABLED (which keeps its meaning: mixed precision, fp16 + grad scaler on
CUDA, bf16 on CPU). bf16 asked for where the CPU lacks those units falls back to fp32, refuses,
or runs anyway, as MODEL.PRECISION_FALLBACK says (fp32 / error / none). fp16 on CPU is refused.

bf16 / fp16 run the model under autocast on channels_last activations and weights
(gn_det.modeling.memory_format.to_channels_last), with GN and WS statistics in fp32, the WS
weight standardized once per forward pass and cast once (gn_det.layers.ws_conv), and the heads'
outputs (scores, box deltas) cast to fp32 before losses and post-processing.
"""
import contextlib
import dataclasses
import logging
from typing import Optional, Tuple

import torch
from torch import nn

from ..layers import WSConv2d
from ..modeling.memory_format import to_channels_last
from .cpu_amp import cpu_bf16_guard

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FALLBACKS = ("fp32", "error", "none")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of the units that make bf16 matrix products fast on x86 CPUs.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Submodules of detectron2's meta-architectures whose outputs feed losses / post-processing.
HEAD_OUTPUTS = ("head", "proposal_generator.rpn_head", "roi_heads.box_predictor",
                "roi_heads.mask_head")


@dataclasses.dataclass(frozen=True)
class Precision:
    """A resolved precision: name (fp32 / bf16 / fp16), device type, whether activations and
    weights are channels_last, and why (for the log line)."""

    name: str = "fp32"
    device_type: str = "cpu"
    channels_last: bool = False
    reason: str = ""

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def mixed(self) -> bool:
        """True for bf16 / fp16: autocast over fp32 master weights."""
        return self.name != "fp32"

    def describe(self) -> str:
        how = "autocast" if self.mixed else "no autocast"
        layout = "channels_last" if self.channels_last else "NCHW"
        return (f"{self.name} on {self.device_type} ({how}, {layout})"
                + (f": {self.reason}" if self.reason else ""))

    def autocast(self, training: bool = False):
        """The context a forward pass runs in: autocast in this precision (with cpu_amp's guard
        for CPU bf16 training), or nothing for fp32."""
        if not self.mixed:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device_type, dtype=self.dtype))
        if training:
            stack.enter_context(cpu_bf16_guard(self.device_type, self.dtype))
        return stack


# ------------------------------------------------------------------------------ detection

def _proc_cpuinfo_flags() -> Optional[set]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_bf16_flags() -> Tuple[str, ...]:
    """Which of CPU_BF16_FLAGS this CPU has: from /proc/cpuinfo, else from torch's own CPU
    probes (torch.cpu._is_amx_tile_supported / _is_avx512_bf16_supported) where it has them."""
    flags = _proc_cpuinfo_flags()
    if flags is None:
        probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
        flags = set()
        for flag, probe in probes.items():
            fn = getattr(torch.cpu, probe, None)
            if fn is not None and fn():
                flags.add(flag)
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# ------------------------------------------------------------------------------ resolution

def resolve_precision(value: str = "auto", device: str = "cpu", amp: bool = False,
                      fallback: str = "fp32", channels_last: bool = False,
                      key: str = "MODEL.PRECISION", amp_key: str = "SOLVER.AMP.ENABLED",
                      fallback_key: str = "MODEL.PRECISION_FALLBACK") -> Precision:
    """The precision `value` means on `device` ('cpu', 'cuda', 'cuda:1', ...), with detectron2's
    AMP switch `amp`; `channels_last` forces NHWC in fp32 too (MODEL.CHANNELS_LAST). Bad values
    and contradictions raise one-line ValueErrors naming `key` / `amp_key` / `fallback_key`."""
    name = str(value).strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"{key}={value!r} is not a precision; valid: {', '.join(PRECISIONS)}")
    policy = str(fallback).strip().lower()
    if policy not in FALLBACKS:
        raise ValueError(f"{fallback_key}={fallback!r}; valid: fp32 (use fp32 where the "
                         f"precision is not supported), error (refuse), none (run it anyway)")
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"MODEL.DEVICE={device!r}: gn_det's precisions are for cpu and cuda")
    if name == "fp32" and amp:
        raise ValueError(f"{key}=fp32 contradicts {amp_key}=True (mixed precision); set "
                         f"{key} to auto, bf16 or fp16, or turn {amp_key} off")
    if name == "fp16" and device_type == "cpu":
        raise ValueError(f"{key}=fp16 is for CUDA only (CPU fp16 kernels are slow and need a "
                         f"grad scaler); on CPU use bf16 (the same speed-up, fp32's range) or fp32")

    def made(chosen: str, why: str) -> Precision:
        return Precision(chosen, device_type, channels_last or chosen != "fp32", why)

    asked = f"{key}={name}" + (f" with {amp_key}=True" if amp else "")
    if device_type == "cuda":
        if name == "auto":
            return made("fp16" if amp else "fp32",
                        f"{asked}: " + ("detectron2's AMP on CUDA is fp16" if amp else
                                        "fp32 on CUDA unless SOLVER.AMP.ENABLED or bf16/fp16"))
        if name == "bf16" and not _cuda_bf16():
            return _unsupported(made, policy, asked, "this GPU has no bf16 support",
                                fallback_key)
        return made(name, f"{asked}")
    flags = cpu_bf16_flags()
    has = f"this CPU has {' and '.join(flags)}" if flags else (
        f"this CPU has neither {' nor '.join(CPU_BF16_FLAGS)} (no bf16 matrix units)")
    if name == "fp32" or (name == "auto" and not amp and not flags):
        return made("fp32", f"{asked}: {has}" if name == "auto" else asked)
    if flags:  # bf16, or auto on a CPU with bf16 units
        return made("bf16", f"{asked}: {has}")
    return _unsupported(made, policy, asked, has, fallback_key)


def _unsupported(made, policy: str, asked: str, why: str, fallback_key: str) -> Precision:
    if policy == "error":
        raise ValueError(f"{asked}: {why}; set {fallback_key} to fp32 to fall back, or none to "
                         f"run bf16 anyway (slowly)")
    if policy == "none":
        return made("bf16", f"{asked}: {why}, running bf16 anyway ({fallback_key}=none)")
    return made("fp32", f"{asked}: {why}; falling back to fp32 ({fallback_key}=fp32; 'error' "
                        f"refuses, 'none' runs bf16 anyway)")


def precision_from_cfg(cfg, log: bool = True) -> Precision:
    """The precision of a detectron2 (YAML) config: MODEL.PRECISION, MODEL.PRECISION_FALLBACK,
    SOLVER.AMP.ENABLED, MODEL.DEVICE, MODEL.CHANNELS_LAST; logged in one line when `log`."""
    precision = resolve_precision(cfg.MODEL.PRECISION, cfg.MODEL.DEVICE, cfg.SOLVER.AMP.ENABLED,
                                  cfg.MODEL.PRECISION_FALLBACK, cfg.MODEL.CHANNELS_LAST)
    if log:
        log_precision(precision)
    return precision


def precision_from_lazy_cfg(cfg, log: bool = True) -> Precision:
    """The precision of a LazyConfig: train.precision, train.precision_fallback,
    train.amp.enabled, train.device (gn_det.config.lazy's TRAIN_DEFAULTS fill the first two)."""
    train = cfg.train
    amp = bool(train.get("amp", {}).get("enabled", False))
    precision = resolve_precision(train.get("precision", "auto"), str(train.get("device", "cpu")),
                                  amp, train.get("precision_fallback", "fp32"), False,
                                  key="train.precision", amp_key="train.amp.enabled",
                                  fallback_key="train.precision_fallback")
    if log:
        log_precision(precision)
    return precision


def log_precision(precision: Precision) -> None:
    """The one line that says which path was taken and why (a warning when it fell back)."""
    level = logging.WARNING if "falling back" in precision.reason else logging.INFO
    logging.getLogger("detectron2").log(level, "gn_det precision: %s", precision.describe())


# ------------------------------------------------------------------------------ models

def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel."""
    return getattr(model, "module", model)


def _submodule(model: nn.Module, dotted: str) -> Optional[nn.Module]:
    for part in dotted.split("."):
        model = getattr(model, part, None)
        if not isinstance(model, nn.Module):
            return None
    return model


def _to_float(value):
    """Floating tensors in nested lists / tuples / dicts -> fp32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float(v) for k, v in value.items()}
    return value


def _float_outputs(module, args, output):
    """Forward hook: the head's outputs in fp32 (losses, box decoding, scores, NMS)."""
    return _to_float(output)


def _heads(model: nn.Module):
    return [m for m in (_submodule(model, name) for name in HEAD_OUTPUTS) if m is not None]


def _has_hook(hooks, fn) -> bool:
    return any(h is fn for h in hooks.values())


def _prepare(model: nn.Module, precision: Precision) -> nn.Module:
    if precision.channels_last:
        to_channels_last(model)
    if precision.mixed:
        for head in _heads(model):
            if not _has_hook(head._forward_hooks, _float_outputs):
                head.register_forward_hook(_float_outputs)
    model._gn_det_precision = precision
    return model


def prepare_for_training(model: nn.Module, precision: Precision) -> nn.Module:
    """Make `model` (or the model inside DDP) train fast in `precision`, in place: channels_last
    weights, input and GroupNorm backward where it says so; the heads' outputs in fp32 when
    mixed. The forward passes then run under `precision.autocast(training=True)` (the trainer's
    job: gn_det.engine.accumulation). Call it before wrapping the model in DDP where possible
    (DDP's gradient buckets follow the parameters' layout at wrapping time). Returns `model`."""
    _prepare(_unwrap(model), precision)
    return model


def _enter_autocast(module, args):
    ctx = module._gn_det_precision.autocast()
    ctx.__enter__()
    module.__dict__.setdefault("_gn_det_autocast", []).append(ctx)


def _exit_autocast(module, args, output):
    stack = module.__dict__.get("_gn_det_autocast")
    if stack:
        stack.pop().__exit__(None, None, None)
    return None


def prepare_for_inference(model: nn.Module, precision: Precision) -> nn.Module:
    """Make `model` infer fast in `precision`, in place, for inference only: eval mode;
    channels_last as in prepare_for_training; when mixed, plain convs' weights stored in the
    precision's dtype (WS convs cache their standardized weight in it), the heads' outputs in
    fp32 and every call of the model run under autocast (hooks, so callers such as detectron2's
    inference_on_dataset need no change; the model still deep-copies and pickles). Returns
    `model`. To evaluate a model that keeps training (train_net's periodic evaluation), leave its
    weights alone: run it under `precision.autocast()` instead."""
    model.eval()
    _prepare(model, precision)
    if precision.mixed:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Conv2d) and not isinstance(module, WSConv2d):
                    for param in (module.weight, module.bias):
                        if param is not None and param.is_floating_point():
                            param.data = param.data.to(precision.dtype)
        if not _has_hook(model._forward_pre_hooks, _enter_autocast):
            model.register_forward_pre_hook(_enter_autocast)
            model.register_forward_hook(_exit_autocast, always_call=True)
    return model


def model_precision(model: nn.Module) -> Optional[Precision]:
    """The Precision `model` was prepared for, or None."""
    return getattr(_unwrap(model), "_gn_det_precision", None)
