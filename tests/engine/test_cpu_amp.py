"""gn_det.engine.cpu_amp: under CPU bf16 autocast the guard gives torch's fp32 conv weight
gradients where oneDNN's bf16 kernel returns garbage, and leaves every other conv in bf16."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

from gn_det.engine.cpu_amp import cpu_bf16_guard, one_pixel_wide_strided

# (input H, W, kernel, stride, padding): every shape a sweep of H, W in 1..8, k in 1/3/5/7,
# stride 1..4 found wrong in torch 2.14.1 has this form; P6/P7 of a 64 px image are the first two.
FAILING = [(2, 2, 3, 2, 1), (1, 1, 3, 2, 1), (3, 1, 3, 2, 1), (2, 2, 3, 3, 1), (6, 2, 5, 3, 2),
           (7, 1, 5, 2, 2)]


@pytest.mark.parametrize("shape, stride, padding, dilation, kernel, expected", [
    ((2, 8, 1, 1), 2, 1, 1, 3, True),      # P7 on a 64 px image
    ((2, 8, 2, 2), 2, 1, 1, 3, True),      # P6 on a 64 px image (res5 is 2x2)
    ((2, 8, 4, 4), 2, 1, 1, 3, False),     # output 2 wide
    ((2, 8, 1, 1), 1, 1, 1, 3, False),     # stride 1 was always right
    ((2, 8, 1, 1), 2, 0, 1, 1, False),     # a 1x1 kernel was always right
    ((2, 8, 5, 2), (1, 2), 1, 1, 3, True),   # the width decides: (2 + 2 - 3) // 2 + 1 = 1
    ((2, 8, 1, 5), (2, 1), 1, 1, 3, False),  # 5 wide: stride 1 along the width
    ((2, 8, 1, 1), 2, 2, 2, 3, True),        # dilation 2: span 5, (1 + 4 - 5) // 2 + 1 = 1
    ((2, 8, 3, 3), 2, 2, 2, 3, False),       # (3 + 4 - 5) // 2 + 1 = 2
])
def test_the_rule_names_one_pixel_wide_strided_convs(shape, stride, padding, dilation, kernel,
                                                    expected):
    weight = torch.zeros(8, 8, kernel, kernel)
    assert one_pixel_wide_strided(torch.zeros(shape), weight, stride, padding, dilation) is expected


def _weight_grad(x, weight, stride, padding, guard: bool):
    weight = weight.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16), \
            cpu_bf16_guard("cpu", torch.bfloat16) if guard else contextlib.nullcontext():
        out = F.conv2d(x, weight, stride=stride, padding=padding)
    (grad,) = torch.autograd.grad((out.float() ** 2).sum() / 2, weight)
    return out, grad


@pytest.mark.parametrize("h, w, k, stride, padding", FAILING)
def test_guarded_weight_gradient_equals_fp32_on_the_failing_shapes(h, w, k, stride, padding):
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):  # the unguarded kernel's garbage changes from call to call
        x = torch.randn(2, 16, h, w, generator=gen)
        weight = torch.randn(16, 16, k, k, generator=gen) / k
        out, grad = _weight_grad(x, weight, stride, padding, guard=True)
        ref_w = weight.clone().requires_grad_()
        ref_out = F.conv2d(x, ref_w, stride=stride, padding=padding)
        (ref,) = torch.autograd.grad((ref_out ** 2).sum() / 2, ref_w)
        assert out.dtype == torch.float32  # computed outside autocast
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_other_convs_stay_in_bf16_under_the_guard():
    out, grad = _weight_grad(torch.randn(2, 16, 8, 8), torch.randn(16, 16, 3, 3), 2, 1, guard=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(grad).all()


@pytest.mark.parametrize("device, dtype", [("cpu", torch.float16), ("cuda", torch.bfloat16),
                                           ("cuda", torch.float16)])
def test_the_guard_is_nothing_outside_cpu_bf16(device, dtype):
    assert isinstance(cpu_bf16_guard(device, dtype), contextlib.nullcontext)
