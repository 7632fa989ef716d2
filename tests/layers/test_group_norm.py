"""gn_det.layers.group_norm: both channels_last routes (the per-image backward on large maps, the
NCHW round trip on small ones) give torch's GroupNorm gradients (fp64 reference; bf16 within its
rounding) and keep the layout, and every other case is left to F.group_norm; use_fast_group_norm
swaps the class in place without changing the module."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gn_det.layers import GroupNorm
from gn_det.layers.group_norm import MAX_CHANNELS_PER_GROUP, NCHW_MAX_HW, use_fast_group_norm

CL = torch.channels_last
SMALL_MAP, LARGE_MAP = (7, 9), (41, 40)  # either side of NCHW_MAX_HW: the two routes


def _inputs(n, c, h, w, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, h, w, generator=g) * 3 + 1).to(dtype).contiguous(memory_format=CL)
    dy = torch.randn(n, c, h, w, generator=g).to(dtype).contiguous(memory_format=CL)
    return x, dy


def _grads(module, x, dy):
    x = x.detach().requires_grad_()
    module.zero_grad()
    y = module(x)
    y.backward(dy)
    return y, x.grad, module.weight.grad, module.bias.grad


def _fp64_reference(module, x, dy):
    ref = copy.deepcopy(module).double()
    ref.__class__ = nn.GroupNorm
    return _grads(ref, x.double(), dy.double())


def _max_rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("hw", [SMALL_MAP, LARGE_MAP], ids=["small_map", "large_map"])
@pytest.mark.parametrize("c, groups", [(64, 32), (128, 32), (256, 32), (12, 12), (24, 1)])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1.2e-2),
                                        (torch.float16, 2e-3)])
def test_channels_last_gradients_equal_fp64_group_norm(c, groups, dtype, tol, hw):
    """bf16 / fp16 inputs (fp32 affine, as under autocast): within the input dtype's rounding of
    the fp64 result (one bf16 ulp is 2^-8 = 3.9e-3); fp32: to fp32 rounding."""
    module = GroupNorm(groups, c)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
    x, dy = _inputs(2, c, *hw, dtype)
    y, dx, dw, db = _grads(module, x, dy)
    ry, rdx, rdw, rdb = _fp64_reference(module, x, dy)
    assert y.dtype == dtype and dx.dtype == dtype and dw.dtype == torch.float32
    assert y.is_contiguous(memory_format=CL) and dx.is_contiguous(memory_format=CL)
    for name, got, ref in (("y", y, ry), ("dx", dx, rdx), ("dgamma", dw, rdw),
                           ("dbeta", db, rdb)):
        assert _max_rel(got, ref) < tol, name


def test_the_fast_backward_runs_where_it_applies_and_only_there():
    assert SMALL_MAP[0] * SMALL_MAP[1] <= NCHW_MAX_HW < LARGE_MAP[0] * LARGE_MAP[1]
    module = GroupNorm(32, 64)
    big, _ = _inputs(2, 64, *LARGE_MAP, torch.bfloat16)
    assert "GroupNormChannelsLast" in type(module(big.requires_grad_()).grad_fn).__name__
    x, dy = _inputs(2, 64, 5, 6, torch.bfloat16)
    assert "GroupNormViaNCHW" in type(module(x.detach().requires_grad_()).grad_fn).__name__
    cases = {
        "NCHW": module(x.contiguous().requires_grad_()),
        "no gradient": module(x),
        "many channels per group": GroupNorm(2, 64)(x.detach().requires_grad_()),
    }
    with torch.no_grad():
        cases["no_grad"] = module(x.detach().requires_grad_())
    for name, y in cases.items():
        fn = type(y.grad_fn).__name__ if y.grad_fn is not None else ""
        assert "ChannelsLast" not in fn and "ViaNCHW" not in fn, name
    assert 64 // 2 > MAX_CHANNELS_PER_GROUP["half"]


@pytest.mark.parametrize("hw", [SMALL_MAP, LARGE_MAP], ids=["small_map", "large_map"])
def test_no_affine_and_batch_of_one(hw):
    module = GroupNorm(4, 8, affine=False)
    x, dy = _inputs(1, 8, *hw, torch.float32)
    x.requires_grad_()
    y = module(x)
    assert y.grad_fn is not None and y.is_contiguous(memory_format=CL)
    y.backward(dy)
    ref_x = x.detach().double().requires_grad_()
    F.group_norm(ref_x, 4).backward(dy.double())
    assert _max_rel(x.grad, ref_x.grad) < 1e-5 and x.grad.is_contiguous(memory_format=CL)


def test_traced_and_scripted_modules_call_plain_group_norm():
    module = GroupNorm(4, 8)
    x, _ = _inputs(2, 8, 3, 4, torch.float32)
    with torch.no_grad():
        traced = torch.jit.trace(module, (x,))
    assert "group_norm" in str(traced.graph) and "PythonOp" not in str(traced.graph)
    scripted = torch.jit.script(module)
    torch.testing.assert_close(scripted(x), F.group_norm(x, 4, module.weight, module.bias))


def test_use_fast_group_norm_swaps_the_class_in_place():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.BatchNorm2d(8))
    before = copy.deepcopy(model.state_dict())
    params = list(model.parameters())
    assert use_fast_group_norm(model) == 1
    assert type(model[1]) is GroupNorm and isinstance(model[1], nn.GroupNorm)
    assert type(model[2]) is nn.BatchNorm2d
    assert list(model.parameters()) == params  # the same Parameter objects
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    buf = io.BytesIO()
    torch.save(model, buf)  # pickles (the class is importable) and deep-copies
    assert type(copy.deepcopy(model)[1]) is GroupNorm
    assert use_fast_group_norm(model) == 0  # idempotent
