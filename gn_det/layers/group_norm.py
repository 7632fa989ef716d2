"""GroupNorm: torch's nn.GroupNorm, with a faster backward for channels_last inputs on CPU.

torch's CPU GroupNorm kernel is fused and fast in NCHW, and its channels_last forward is too, but
its channels_last input gradient loops over the channels of one group without vectorizing them:
with few channels per group (C/G = 2 in a ResNet's res2 at 32 groups, 4 in a 128-channel FPN) it
took 10-40x the NCHW time in bf16 (docs/PERFORMANCE.md), a third of a bf16 channels_last
training step. Here the forward is torch's, and the backward takes from torch's kernel only what
it does fast in channels_last (the per-channel sums behind the affine gradients, one image at a
time) and forms the input gradient with one more of torch's fused passes: statistics stay in fp32
and no tensor changes memory format. On small maps (up to NCHW_MAX_HW pixels per image: a
detector's coarse levels, or every level of a small-image batch) that per-image loop and torch's
channels_last forward cost more than a round trip through NCHW, so there GN runs torch's NCHW
kernels between two reorders, one each way (fp32 statistics as well). Everywhere else (NCHW,
CUDA, no gradient, tracing, scripting, compiling, more channels per group than
MAX_CHANNELS_PER_GROUP) it is plain `F.group_norm`, whose output is made channels_last again
where torch's kernel returned NCHW for a channels_last input (CUDA), so a channels_last network
stays channels_last.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .layout import is_channels_last

__all__ = ["GroupNorm", "group_norm_channels_last", "group_norm_via_nchw", "use_fast_group_norm"]

# Channels per group up to which this backward beat torch's channels_last one (bf16 / fp16
# inputs, and fp32; docs/PERFORMANCE.md): beyond, torch's kernel vectorizes over the channels.
MAX_CHANNELS_PER_GROUP = {"half": 8, "float": 2}
# Pixels per image up to which the NCHW round trip beat the per-image channels_last backward
# (bf16 forward + backward, 1-8 images, 64-256 channels; `gn-det-benchmark gn_routes`): 40 x 40,
# where it is 1.3x faster at 64 channels and within 10 % at 128-256.
NCHW_MAX_HW = 1600


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters, state dict and outputs) whose backward is fast on
    channels_last CPU inputs; see the module docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if _fast_backward_applies(x, self.num_groups):
                return self._channels_last(x)
        y = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        if not torch.jit.is_scripting():
            y = self._keep_layout(x, y)
        return y

    @torch.jit.unused
    def _channels_last(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] * x.shape[3] <= NCHW_MAX_HW:
            return group_norm_via_nchw(x, self.num_groups, self.weight, self.bias, self.eps)
        return group_norm_channels_last(x, self.num_groups, self.weight, self.bias, self.eps)

    @torch.jit.unused
    def _keep_layout(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`y` channels_last where `x` is: torch's CUDA kernel has returned NCHW for a
        channels_last input (a torch that keeps the layout makes this a no-op). One reorder
        here, where the next channels_last conv would otherwise reorder its input (and a
        residual add would mix layouts)."""
        if is_channels_last(x) and not is_channels_last(y):
            return y.contiguous(memory_format=torch.channels_last)
        return y


def use_fast_group_norm(model: nn.Module) -> int:
    """Make every plain nn.GroupNorm in `model` (GN, LN_CHW, IN as build_norm makes them) a
    GroupNorm, in place (same parameters, state dict and outputs); returns how many. The
    builders keep torch's class, so a model is detectron2's module for module until it is
    prepared for channels_last training (gn_det.engine.precision)."""
    count = 0
    for module in model.modules():
        if type(module) is nn.GroupNorm:
            module.__class__ = GroupNorm
            count += 1
    return count


def _fast_backward_applies(x: torch.Tensor, num_groups: int) -> bool:
    limit = MAX_CHANNELS_PER_GROUP["float" if x.dtype == torch.float32 else "half"]
    return (x.device.type == "cpu" and torch.is_grad_enabled() and x.requires_grad
            and is_channels_last(x) and x.shape[1] // num_groups <= limit
            and not torch.jit.is_tracing() and not _compiling())


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling")
                and compiler.is_compiling())


def group_norm_channels_last(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """F.group_norm for a 4D channels_last `x`, with the backward of the module docstring.
    `weight` / `bias` may be None (no affine)."""
    w, b = _affine(x, weight, bias)
    return _GroupNormChannelsLast.apply(x, num_groups, w, b, eps)


def _affine(x, weight, bias):
    channels = x.shape[1]
    w = weight if weight is not None else torch.ones(channels, device=x.device)
    b = bias if bias is not None else torch.zeros(channels, device=x.device)
    return w, b


def group_norm_via_nchw(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5):
    """F.group_norm for a 4D channels_last `x` through torch's NCHW kernels: `x` and the output
    gradient are reordered to NCHW, the output and the input gradient back to channels_last."""
    w, b = _affine(x, weight, bias)
    return _GroupNormViaNCHW.apply(x, num_groups, w, b, eps)


class _GroupNormViaNCHW(torch.autograd.Function):
    """torch's native GroupNorm forward and backward on an NCHW copy of `x` (saved for the
    backward in place of `x`); outputs and input gradient channels_last."""

    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, eps):
        n, c, h, w = x.shape
        x = x.contiguous()
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w,
                                                        num_groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.num_groups = num_groups
        return y.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        dx, dgamma, dbeta = torch.ops.aten.native_group_norm_backward(
            dy.contiguous(), x, mean, rstd, weight, n, c, h * w, ctx.num_groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]])
        if dx is not None:
            dx = dx.contiguous(memory_format=torch.channels_last)
        return dx, None, dgamma, dbeta, None


class _GroupNormChannelsLast(torch.autograd.Function):
    """y = (x - mean) * rstd * gamma + beta per (image, group); mean and rstd in fp32.

    With s1 = sum over a group of gamma * dy * xhat and s2 = sum of gamma * dy (M elements):
        dx = rstd * gamma * dy + rstd * (-(s1 / M) * xhat - s2 / M)
    The second term is an affine map of xhat per (image, group), applied in one fused pass by
    batch norm's inference kernel (fp32 arithmetic); s1 and s2 come from the per-channel sums
    torch's GroupNorm backward gives for gamma / beta.
    """

    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, eps):
        n, c, h, w = x.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w,
                                                        num_groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.num_groups, ctx.eps = num_groups, eps
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        groups, eps = ctx.num_groups, ctx.eps
        n, c, h, w = x.shape
        per_group = c // groups
        count = per_group * h * w
        dy = dy.contiguous(memory_format=torch.channels_last)
        gamma = weight.float().view(groups, per_group)
        dx = torch.empty_like(x, memory_format=torch.channels_last)
        dgamma, dbeta = 0, 0
        for i in range(n):  # torch's per-channel sums are fast in channels_last, summed over N
            xi, dyi = x[i:i + 1], dy[i:i + 1]
            _, dg, db = torch.ops.aten.native_group_norm_backward(
                dyi, xi, mean[i:i + 1], rstd[i:i + 1], weight, 1, c, h * w, groups,
                [False, True, True])
            rs = rstd[i].view(groups, 1)
            s1 = (dg.float().view(groups, per_group) * gamma).sum(1, keepdim=True)
            s2 = (db.float().view(groups, per_group) * gamma).sum(1, keepdim=True)
            # -(s1 / M) * rstd * xhat - rstd * s2 / M: a per-channel affine of (x - mean) * rstd
            # for this image, which batch norm's inference kernel applies in one fused pass
            # (its "running" statistics are this image's group statistics, per channel).
            per_channel = (groups, per_group)
            rest = F.batch_norm(
                xi, mean[i].view(groups, 1).expand(per_channel).reshape(c),
                (rs.square().reciprocal() - eps).expand(per_channel).reshape(c),
                (-rs * s1 / count).expand(per_channel).reshape(c),
                (-rs * s2 / count).expand(per_channel).reshape(c), False, 0.0, eps)
            scale = (rs * gamma).reshape(1, c, 1, 1).to(x.dtype)
            torch.addcmul(rest, scale, dyi, out=dx[i:i + 1])
            dgamma, dbeta = dgamma + dg, dbeta + db
        return (dx if ctx.needs_input_grad[0] else None, None,
                dgamma if ctx.needs_input_grad[2] else None,
                dbeta if ctx.needs_input_grad[3] else None, None)
