"""Batch Renormalization (Ioffe, "Batch Renormalization", NeurIPS 2017) for 2D feature maps.

In training, BN's output is corrected towards the running statistics: with the batch's mean and
std (mu_B, sigma_B) and the running ones (mu, sigma),

    y = gamma * ((x - mu_B) / sigma_B * r + d) + beta,
    r = clip(sigma_B / sigma, 1 / r_max, r_max),  d = clip((mu_B - mu) / sigma, -d_max, d_max),

with r and d treated as constants in the backward. r_max = 1, d_max = 0 is BN; evaluation uses the
running statistics, as BN does. The clip limits start at (1, 0) and open up on a schedule
(`RenormSchedule`), counted in the layer's training forward passes (BN's `num_batches_tracked`):
the corrections mean something only once the running averages do.

`BatchRenorm2d` is an `nn.BatchNorm2d` (same parameters, buffers and state dict; eval forward is
BN's), so detectron2's norm weight decay, FrozenBN conversion and BN exporters treat it as BN.
"""
import dataclasses
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BatchRenorm2d", "RenormSchedule"]


@dataclasses.dataclass(frozen=True)
class RenormSchedule:
    """The clip limits over the layer's training passes: (1, 0) for `warmup` passes, then r_max
    and d_max grow linearly to their final values at `r_end` / `d_end` passes.

    The defaults suit BN's momentum 0.1, whose running averages settle in ~5 / momentum = 50
    passes: warm-up 50, d_max reached at 250, r_max at 400, the ratios of Ioffe's schedule
    (5k / 25k / 40k steps) and his final limits r_max 3, d_max 5."""

    r_max: float = 3.0
    d_max: float = 5.0
    warmup: int = 50
    r_end: int = 400
    d_end: int = 250

    def __post_init__(self):
        if self.r_max < 1 or self.d_max < 0:
            raise ValueError(f"BRN: r_max must be >= 1 and d_max >= 0, got {self.r_max} and "
                             f"{self.d_max}")
        if not 0 <= self.warmup <= min(self.r_end, self.d_end):
            raise ValueError(f"BRN: warmup ({self.warmup}) must be in [0, min(r_end, d_end) = "
                             f"{min(self.r_end, self.d_end)}]")

    def limits(self, passes: int) -> Tuple[float, float]:
        """(r_max, d_max) after `passes` training passes."""
        def ramp(final, end, start_value):
            if passes >= end:
                return final
            if passes <= self.warmup:
                return start_value
            return start_value + (final - start_value) * (passes - self.warmup) / (end -
                                                                                   self.warmup)
        return ramp(self.r_max, self.r_end, 1.0), ramp(self.d_max, self.d_end, 0.0)



class BatchRenorm2d(nn.BatchNorm2d):
    """Batch Renormalization over (N, H, W) per channel; see the module docstring. The batch's
    normalization is torch's BN kernel (statistics in fp32 for bf16 / fp16 inputs); r and d
    rescale and shift its output per channel."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, schedule: Optional[RenormSchedule] = None,
                 device=None, dtype=None):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=True, device=device, dtype=dtype)
        self.schedule = schedule or RenormSchedule()

    def extra_repr(self) -> str:
        s = self.schedule
        return (super().extra_repr() + f", r_max={s.r_max:g}, d_max={s.d_max:g}, "
                f"warmup={s.warmup}, r_end={s.r_end}, d_end={s.d_end}")

    def current_limits(self) -> Tuple[float, float]:
        """(r_max, d_max) the next training pass uses."""
        return self.schedule.limits(int(self.num_batches_tracked))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        if x.dim() != 4:
            raise ValueError(f"BatchRenorm2d expects (N, C, H, W) input, got {tuple(x.shape)}")
        count = x.numel() // x.shape[1]
        if count < 2:  # BN's own condition: one value per channel has no variance
            raise ValueError(f"BatchRenorm2d: expected more than 1 value per channel when "
                             f"training, got input of size {tuple(x.shape)}")
        r_max, d_max = self.current_limits()
        # torch's fused BN kernel (forward and backward) normalizes by the batch's statistics
        # and, with momentum 1 into scratch buffers, returns them: mean and unbiased variance.
        stats_dtype = torch.promote_types(self.running_mean.dtype, torch.float32)
        mean = torch.zeros_like(self.running_mean, dtype=stats_dtype)
        unbiased = torch.ones_like(self.running_var, dtype=stats_dtype)
        xhat = F.batch_norm(x, mean, unbiased, None, None, True, 1.0, self.eps)
        with torch.no_grad():
            std = (unbiased * ((count - 1) / count) + self.eps).sqrt()
            running_std = (self.running_var + self.eps).sqrt()
            r = (std / running_std).clamp(1.0 / r_max, r_max)
            d = ((mean - self.running_mean) / running_std).clamp(-d_max, d_max)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked.add_(1)
        # y = gamma * (xhat * r + d) + beta, r and d constants of the backward
        scale, shift = r, d
        if self.affine:
            scale, shift = r * self.weight, d * self.weight + self.bias
        shape = (1, -1, 1, 1)
        return torch.addcmul(shift.view(shape).to(xhat.dtype), xhat,
                             scale.view(shape).to(xhat.dtype))
