"""The training optimizer: detectron2's param groups, with GN/LN/IN affine weight decay set apart
(SOLVER.WEIGHT_DECAY_GN, 0 by default as in Detectron's GN models), and SOLVER.OPTIMIZER choosing
SGD (detectron2's) or AdamW (common for training from scratch), each as torch's fused one-kernel
step where torch has one for the parameters' device (SOLVER.FUSED)."""
import torch
from torch import nn

from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping


def group_norm_params(model: nn.Module) -> set:
    """ids of the affine parameters of every nn.GroupNorm (GN, and LN/IN built as GroupNorm)."""
    return {id(p) for m in model.modules() if isinstance(m, nn.GroupNorm)
            for p in m.parameters(recurse=False)}


def split_group_norm_decay(param_groups, gn_ids: set, weight_decay_gn: float):
    """Move GroupNorm parameters of each group into a sibling group with `weight_decay_gn`."""
    out = []
    for group in param_groups:
        gn = [p for p in group["params"] if id(p) in gn_ids]
        rest = [p for p in group["params"] if id(p) not in gn_ids]
        if rest:
            out.append({**group, "params": rest})
        if gn:
            out.append({**group, "params": gn, "weight_decay": weight_decay_gn})
    return out


OPTIMIZERS = ("SGD", "AdamW")


def fused_supported(optimizer_cls, params) -> bool:
    """Whether torch has a fused step of `optimizer_cls` for these parameters: floating point, all
    on one device that torch's fused kernels cover (CPU and CUDA in current torch)."""
    params = [p for p in params if p.requires_grad]
    if not params or len({(p.device, p.dtype) for p in params}) > 1 \
            or not params[0].is_floating_point():
        return False
    probe = torch.zeros(1, device=params[0].device, dtype=params[0].dtype, requires_grad=True)
    try:
        optimizer_cls([probe], lr=0.0, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """detectron2's build_optimizer, plus SOLVER.WEIGHT_DECAY_GN for GroupNorm affine params and
    SOLVER.OPTIMIZER; gradient clipping (SOLVER.CLIP_GRADIENTS) applies to either."""
    if cfg.SOLVER.OPTIMIZER not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER {cfg.SOLVER.OPTIMIZER!r}: expected one of "
                         f"{', '.join(OPTIMIZERS)}")
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    params = split_group_norm_decay(params, group_norm_params(model), cfg.SOLVER.WEIGHT_DECAY_GN)
    cls = torch.optim.AdamW if cfg.SOLVER.OPTIMIZER == "AdamW" else torch.optim.SGD
    extra = {"fused": True} if cfg.SOLVER.FUSED and fused_supported(
        cls, [p for g in params for p in g["params"]]) else {}
    if cls is torch.optim.AdamW:  # SOLVER.MOMENTUM / NESTEROV are SGD's
        return maybe_add_gradient_clipping(cfg, cls)(
            params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **extra)
    return maybe_add_gradient_clipping(cfg, cls)(
        params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **extra)
