"""gn_det.layers.batch_renorm: Batch Renormalization is BN where r = 1 and d = 0 (training forward,
backward, running statistics, eval), follows the paper's formulas elsewhere (r and d constants in
the backward), opens its clip limits on its schedule, and loads BN's state dict."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import CycleBatchNormList, FrozenBatchNorm2d
from gn_det.layers import BatchRenorm2d, NormSpec, RenormSchedule, build_norm

BN_ONLY = RenormSchedule(r_max=1.0, d_max=0.0, warmup=0, r_end=0, d_end=0)


def _randomized(module, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
        module.bias.copy_(torch.randn(module.bias.shape, generator=g))
    return module


def _batches(n, c=16, steps=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, c, 5, 7, generator=g, dtype=torch.float64) * 3 + 2).to(dtype)
            for _ in range(steps)]


def _step(module, x, dy):
    x = x.detach().requires_grad_()
    module.zero_grad()
    y = module(x)
    y.backward(dy)
    return y, x.grad, module.weight.grad, module.bias.grad


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("n", [1, 2, 8])
def test_equals_batch_norm_where_r_is_1_and_d_is_0(n, dtype, tol):
    """Training forward and backward over several steps, the running statistics they leave, and
    the eval forward: r_max = 1, d_max = 0 is nn.BatchNorm2d."""
    brn = _randomized(BatchRenorm2d(16, schedule=BN_ONLY)).to(dtype)
    bn = nn.BatchNorm2d(16).to(dtype)
    bn.load_state_dict(brn.state_dict())
    for x in _batches(n, dtype=dtype):
        dy = torch.randn_like(x)
        for got, ref in zip(_step(brn, x, dy), _step(bn, x, dy)):
            torch.testing.assert_close(got, ref, atol=tol, rtol=tol)
    for key, value in bn.state_dict().items():
        torch.testing.assert_close(brn.state_dict()[key], value, atol=tol, rtol=tol, msg=key)
    brn.eval(), bn.eval()
    x = _batches(3, dtype=dtype, seed=9)[0]
    torch.testing.assert_close(brn(x), bn(x), atol=tol, rtol=tol)


def _paper(x, weight, bias, running_mean, running_var, eps, r_max, d_max):
    """Ioffe's Algorithm 1, literally, in fp64: r and d are constants for the backward."""
    mean = x.mean(dim=(0, 2, 3))
    std = torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False) + eps)
    sigma = torch.sqrt(running_var + eps)
    r = (std / sigma).clamp(1 / r_max, r_max).detach()
    d = ((mean - running_mean) / sigma).clamp(-d_max, d_max).detach()
    v = (1, -1, 1, 1)
    xhat = (x - mean.view(v)) / std.view(v) * r.view(v) + d.view(v)
    return weight.view(v) * xhat + bias.view(v), r, d


def test_follows_the_paper_where_r_and_d_are_clipped():
    """Running statistics far from the batch's, so r and d are clipped at r_max / d_max in some
    channels and not in others; forward and gradients equal Algorithm 1's."""
    schedule = RenormSchedule(r_max=1.5, d_max=0.5, warmup=0, r_end=0, d_end=0)
    brn = _randomized(BatchRenorm2d(16, schedule=schedule)).double()
    with torch.no_grad():
        brn.running_mean.copy_(torch.linspace(-3, 5, 16))
        brn.running_var.copy_(torch.linspace(0.2, 30, 16))
    x = _batches(4, dtype=torch.float64)[0]
    dy = torch.randn_like(x)
    ref_module = copy.deepcopy(brn)
    y, dx, dw, db = _step(brn, x, dy)
    xr = x.detach().requires_grad_()
    ref, r, d = _paper(xr, ref_module.weight, ref_module.bias, ref_module.running_mean,
                       ref_module.running_var, brn.eps, 1.5, 0.5)
    ref.backward(dy)
    assert (r == 1.5).any() and (r < 1.5).any()
    assert (d.abs() == 0.5).any() and (d.abs() < 0.5).any()
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(dx, xr.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(dw, ref_module.weight.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(db, ref_module.bias.grad, atol=1e-12, rtol=1e-12)
    # The running statistics move as BN's do: momentum 0.1, the unbiased batch variance.
    torch.testing.assert_close(brn.running_mean, 0.9 * ref_module.running_mean
                               + 0.1 * x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(brn.running_var, 0.9 * ref_module.running_var
                               + 0.1 * x.var(dim=(0, 2, 3), unbiased=True))
    assert int(brn.num_batches_tracked) == 1


def test_schedule_opens_the_limits_after_the_warmup():
    s = RenormSchedule(r_max=3.0, d_max=5.0, warmup=10, r_end=50, d_end=30)
    assert s.limits(0) == s.limits(10) == (1.0, 0.0)
    assert s.limits(30) == pytest.approx((2.0, 5.0))
    assert s.limits(50) == s.limits(10**6) == (3.0, 5.0)
    default = RenormSchedule()
    assert (default.r_max, default.d_max, default.warmup, default.r_end, default.d_end) == \
        (3.0, 5.0, 50, 400, 250)


def test_the_layer_counts_its_training_passes():
    brn = BatchRenorm2d(4, schedule=RenormSchedule(warmup=1, r_end=3, d_end=2))
    seen = []
    for x in _batches(2, c=4, steps=4):
        seen.append(brn.current_limits())
        brn(x)
    assert seen == [(1.0, 0.0), (1.0, 0.0), pytest.approx((2.0, 5.0)), (3.0, 5.0)]
    brn.eval()
    brn(_batches(2, c=4, steps=1)[0])  # evaluation is no training pass
    assert int(brn.num_batches_tracked) == 4


@pytest.mark.parametrize("change, match", [
    (dict(r_max=0.5), "r_max must be >= 1"), (dict(d_max=-1.0), "and d_max >= 0, got 3.0 and -1.0"),
    (dict(warmup=300), r"warmup \(300\) must be in \[0, min\(r_end, d_end\) = 250\]"),
])
def test_bad_schedules_are_one_line(change, match):
    with pytest.raises(ValueError, match=match):
        RenormSchedule(**change)


def test_eval_is_batch_norm_with_the_running_statistics_and_state_dict_is_bns():
    bn = _randomized(nn.BatchNorm2d(8))
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    brn = BatchRenorm2d(8)
    brn.load_state_dict(bn.state_dict(), strict=True)
    bn.eval(), brn.eval()
    x = _batches(1, c=8)[0]
    torch.testing.assert_close(brn(x), F.batch_norm(x, bn.running_mean, bn.running_var,
                                                    bn.weight, bn.bias, False, 0.0, bn.eps))
    assert list(brn.state_dict()) == list(bn.state_dict())


def test_bf16_input_keeps_its_dtype_with_fp32_statistics():
    brn, ref = BatchRenorm2d(16), BatchRenorm2d(16)
    x = _batches(2)[0]
    y = brn(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref(x), atol=0.05, rtol=0.02)
    torch.testing.assert_close(brn.running_mean, ref.running_mean, atol=1e-2, rtol=1e-2)


def test_one_value_per_channel_is_refused_as_bn_refuses_it():
    with pytest.raises(ValueError, match=r"expected more than 1 value per channel when "
                                         r"training, got input of size \(1, 4, 1, 1\)"):
        BatchRenorm2d(4)(torch.randn(1, 4, 1, 1))


def test_built_by_name_without_affine_and_frozen_as_bn():
    m = build_norm("BRN", 8)
    assert type(m) is BatchRenorm2d and isinstance(m, nn.BatchNorm2d) and m.momentum == 0.1
    assert build_norm("batchrenorm", 8).num_features == 8
    assert build_norm(NormSpec("BRN", affine=False), 8).weight is None
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(nn.Sequential(m))
    assert type(frozen[0]) is FrozenBatchNorm2d  # FREEZE_AT freezes it like BN


def test_retinanet_head_keeps_brn_statistics_per_level():
    from detectron2.layers import ShapeSpec

    from gn_det.modeling.retinanet import GNRetinaNetHead

    head = GNRetinaNetHead(input_shape=[ShapeSpec(channels=16)] * 3, num_classes=2,
                           num_anchors=1, conv_dims=[16], norm="BRN")
    per_level = head.cls_subnet[1]
    assert type(per_level) is CycleBatchNormList and len(per_level) == 3
    assert all(type(m) is BatchRenorm2d and m.weight is None for m in per_level)
    head([torch.randn(2, 16, s, s) for s in (8, 4, 2)])
    assert [int(m.num_batches_tracked) for m in per_level] == [1, 1, 1]
