"""Gradient accumulation for small per-GPU batches (with or without AMP), and detectron2's
world-size LR scaling extended to it.

With GN there are no batch statistics, so k micro-steps of b images (loss scaled by 1/k) give the
same update as one step of k*b images; BN cannot promise that.
"""
import contextlib
import logging
import time
from typing import Union

import torch

from detectron2.engine import DefaultTrainer, SimpleTrainer

from ..utils.text import plural
from ..layers import ws_step_cache
from .cpu_amp import cpu_bf16_guard
from .precision import Precision, prepare_for_training

logger = logging.getLogger(__name__)


class AccumulatingTrainer(SimpleTrainer):
    """SimpleTrainer whose step runs `accumulate_steps` forward/backward micro-steps (DDP gradient
    sync only on the last) before one optimizer step; losses must be finite.

    With `amp` (SOLVER.AMP.ENABLED) the forwards run under autocast, by default on CUDA in fp16
    with a grad scaler (every micro-step's loss is scaled; the scaler unscales, steps and updates
    once per optimizer step, skipping steps whose gradients overflowed), as detectron2's
    AMPTrainer does for one micro-step; on CPU in bf16 (detectron2's AMPTrainer is CUDA-only),
    which keeps fp32's exponent range and so needs no scaler (with cpu_amp's guard for oneDNN's
    bf16 conv weight-gradient bug). `precision` fp16 always gets a
    scaler on the model's device.

    `precision` may instead be a resolved gn_det.engine.precision.Precision (MODEL.PRECISION):
    it then decides autocast and its dtype (`amp` is ignored), and the model is prepared for it
    (channels_last, heads' outputs in fp32: precision.prepare_for_training). Every micro-step's
    forward runs in a ws_step_cache() block: each WS conv standardizes its weight once per
    forward pass (RetinaNet's head convs serve five FPN levels), and each micro-step's backward
    runs through its own graph."""

    def __init__(self, model, data_loader, optimizer, accumulate_steps: int = 1,
                 amp: bool = False, precision: Union[None, torch.dtype, Precision] = None,
                 grad_scaler=None):
        super().__init__(model, data_loader, optimizer)
        if accumulate_steps < 1:
            raise ValueError(f"SOLVER.ACCUMULATE_STEPS must be >= 1, got {accumulate_steps}")
        self.accumulate_steps = accumulate_steps
        self.precision_setting = precision if isinstance(precision, Precision) else None
        if self.precision_setting is not None:
            prepare_for_training(model, precision)
            amp = precision.mixed
            precision = precision.dtype if amp else None
        self.amp_device = _device_type(model) if amp else None
        self.precision = (precision or (torch.float16 if self.amp_device == "cuda"
                                        else torch.bfloat16)) if amp else torch.float32
        if grad_scaler is None and amp and self.precision == torch.float16:
            grad_scaler = make_grad_scaler(self.amp_device)
        self.grad_scaler = grad_scaler

    @contextlib.contextmanager
    def _autocast(self):
        if self.amp_device is None:
            yield
            return
        with torch.autocast(self.amp_device, dtype=self.precision), \
                cpu_bf16_guard(self.amp_device, self.precision):
            yield

    def run_step(self):
        assert self.model.training, "[AccumulatingTrainer] model was changed to eval mode!"
        self.optimizer.zero_grad()
        k, data_time, summed = self.accumulate_steps, 0.0, {}
        for micro in range(k):
            start = time.perf_counter()
            data = next(self._data_loader_iter)
            data_time += time.perf_counter() - start
            sync = micro == k - 1 or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with self._autocast(), ws_step_cache():
                    loss_dict = self.model(data)
                if isinstance(loss_dict, torch.Tensor):
                    loss_dict = {"total_loss": loss_dict}
                check_finite(loss_dict, self.iter, micro)
                loss = sum(loss_dict.values()) / k
                (loss if self.grad_scaler is None else self.grad_scaler.scale(loss)).backward()
            for name, value in loss_dict.items():
                summed[name] = summed.get(name, 0.0) + value.detach().float() / k
        if hasattr(self, "after_backward"):  # detectron2 main's hook point (not in v0.6)
            self.after_backward()
        self._write_metrics(summed, data_time)
        if self.grad_scaler is None:
            self.optimizer.step()
        else:  # unscaled first: gradient clipping, fused step or not, sees the true gradients
            self.grad_scaler.unscale_(self.optimizer)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:  # the key detectron2's AMPTrainer uses
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


def _device_type(model) -> str:
    param = next(iter(model.parameters()), None)
    return param.device.type if param is not None else "cpu"


def make_grad_scaler(device: str = "cuda"):
    """A grad scaler for `device` through whichever API this torch has (torch.amp's since 2.3;
    before it, torch.cuda.amp's, CUDA only)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device)
    if device != "cuda":
        raise ValueError(f"AMP in fp16 on {device} needs torch >= 2.3 (torch.amp.GradScaler); "
                         f"use bf16, which needs no grad scaler")
    return torch.cuda.amp.GradScaler()


def check_finite(loss_dict, iteration: int, micro_step: int = 0):
    """Stop with the iteration and the offending loss terms named when a loss is NaN or inf."""
    bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v).all()}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise FloatingPointError(
            f"loss is not finite at iteration {iteration} (micro-step {micro_step}): {terms}; "
            f"lower SOLVER.BASE_LR or raise SOLVER.WARMUP_ITERS, then resume from the last "
            f"checkpoint")


def scale_for_world(cfg, world_size: int):
    """detectron2's REFERENCE_WORLD_SIZE scaling, counting accumulation as extra workers.

    The config was tuned for SOLVER.IMS_PER_BATCH images per step over REFERENCE_WORLD_SIZE GPUs.
    Keeping the per-GPU batch, a run on `world_size` processes with k accumulation steps has an
    effective batch k*world_size/REFERENCE times the reference, and LR, MAX_ITER, STEPS, warm-up,
    eval and checkpoint periods scale by that factor (detectron2's auto_scale_workers); only
    IMS_PER_BATCH (images per forward across processes) scales by world_size/REFERENCE.
    """
    k = cfg.SOLVER.ACCUMULATE_STEPS
    ref = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if ref == 0:
        return cfg
    per_gpu = cfg.SOLVER.IMS_PER_BATCH // ref
    if cfg.SOLVER.IMS_PER_BATCH == per_gpu * world_size and ref == world_size * k:
        return cfg
    scaled = DefaultTrainer.auto_scale_workers(cfg, world_size * k)
    scaled = scaled.clone() if scaled is cfg else scaled
    frozen = scaled.is_frozen()
    scaled.defrost()
    scaled.SOLVER.IMS_PER_BATCH = per_gpu * world_size
    scaled.SOLVER.REFERENCE_WORLD_SIZE = world_size * k
    if frozen:
        scaled.freeze()
    return scaled


def describe_batch(cfg, world_size: int) -> str:
    """The log line stating per-GPU batch, accumulation and effective batch."""
    ims, k = cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.ACCUMULATE_STEPS
    if ims % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={ims} is not divisible by the {world_size} "
                         f"processes; use a multiple of {world_size}")
    return (f"per-GPU batch: {plural(ims // world_size, 'image')} (SOLVER.IMS_PER_BATCH={ims} "
            f"over {plural(world_size, 'process')}), SOLVER.ACCUMULATE_STEPS={k} -> effective "
            f"batch {ims * k}, "
            f"BASE_LR={cfg.SOLVER.BASE_LR:g}")
