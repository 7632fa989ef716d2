"""Device acceptance, layers: GN and WS statistics stay in fp32 under fp16 (no overflow on
activations and weights whose squares exceed fp16's 65504), and conv -> GN -> ReLU stays
channels_last, on the device under test (tests/device/conftest.py). On CPU, torch's CPU fp16
autocast stands in for CUDA's (the same gn_det code runs; CPU fp16 is no gn_det precision)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gn_det.layers import GroupNorm, WSConv2d
from gn_det.layers.layout import is_channels_last
from gn_det.modeling.memory_format import to_channels_last

pytestmark = pytest.mark.device

# Activations around 2e4 +- 2e3: representable in fp16 (max 65504, spacing 16 there), but a
# group's sum (2e4 x 2048 values) and every squared deviation (~4e6) overflow it.
ACTIVATION_MEAN, ACTIVATION_STD = 2e4, 2e3
# Conv weights of std 1e3: fp16 holds them, their variance (1e6) overflows it.
WEIGHT_STD = 1e3


def layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last if channels_last
                        else torch.contiguous_format)


def fp16_autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.float16)


def naive_fp16_variance(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Per-(image, group) variance with every op in fp16: what the layers must not do."""
    g = x.half().reshape(x.shape[0], groups, -1)
    return ((g - g.mean(dim=2, keepdim=True)) ** 2).mean(dim=2)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_group_norm_statistics_do_not_overflow_in_fp16(channels_last, device):
    """gn_det's GroupNorm on fp16 activations whose statistics overflow fp16 (the naive fp16
    variance is inf on this input), forward and backward under fp16 autocast: finite, and within
    fp16 rounding of fp32 GroupNorm on the same values (outputs ~N(0, 1): 1e-2 absolute; input
    gradients relative to their scale)."""
    torch.manual_seed(0)
    x16 = (torch.randn(2, 64, 16, 16) * ACTIVATION_STD + ACTIVATION_MEAN).half()
    assert torch.isinf(naive_fp16_variance(x16, 8)).all()  # the input does break fp16 statistics
    gn = GroupNorm(8, 64).to(device)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5), gn.bias.uniform_(-0.2, 0.2)
    dy = torch.randn(2, 64, 16, 16, device=device)

    def run(x, autocast):
        x = layout(x.to(device), channels_last).requires_grad_()
        with fp16_autocast(device) if autocast else torch.autocast(device.type, enabled=False):
            y = gn(x)
        (y.float() * layout(dy, channels_last)).sum().backward()
        return y.float(), x.grad.float()

    ref_y, ref_dx = run(x16.float(), autocast=False)
    y, dx = run(x16, autocast=True)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    assert (y - ref_y).abs().max() <= 1e-2
    assert (dx - ref_dx).abs().max() <= 1e-2 * ref_dx.abs().max()


@pytest.mark.parametrize("style", ["timm", "mmcv"])
def test_ws_variance_does_not_overflow_in_fp16(style, device):
    """WSConv2d with weights whose variance overflows fp16 (the naive fp16 variance is inf):
    under fp16 autocast (fp32 master weights) and as a pure fp16 module (.half()), training
    forward and backward: finite, and within fp16 rounding of the fp32 conv (outputs relative
    to their scale, 1e-2; the weight gradient likewise)."""
    torch.manual_seed(0)
    conv = WSConv2d(32, 16, 3, padding=1, ws_style=style).to(device)
    with torch.no_grad():
        conv.weight.normal_(0, WEIGHT_STD)
    assert torch.isinf(conv.weight.detach().half().var(dim=(1, 2, 3))).all()
    x = torch.randn(2, 32, 12, 12, device=device)

    def run(module, inp, autocast):
        module.zero_grad()
        with fp16_autocast(device) if autocast else torch.autocast(device.type, enabled=False):
            y = module(inp)
        y.float().square().mean().backward()
        return y.float(), module.weight.grad.float()

    ref_y, ref_dw = run(conv, x, autocast=False)
    for name, module, inp, autocast in (("autocast", conv, x, True),
                                        ("half", conv.half(), x.half(), False)):
        y, dw = run(module, inp, autocast)
        assert torch.isfinite(y).all() and torch.isfinite(dw).all(), name
        assert (y - ref_y).abs().max() <= 1e-2 * ref_y.abs().max(), name
        assert (dw - ref_dw).abs().max() <= 1e-2 * ref_dw.abs().max(), name


def conv_gn_relu(device: torch.device) -> nn.Module:
    """conv -> GN -> ReLU, prepared as MODEL.PRECISION's channels_last path prepares a model."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.ReLU())
    return to_channels_last(block).to(device)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_conv_group_norm_relu_keeps_channels_last(training, precision, device):
    """A channels_last conv -> GN -> ReLU block returns channels_last, and in training its
    input gradient too, in fp32 and under fp16 / bf16 autocast: no reorder between layers
    (gn_det's GroupNorm restores the layout where torch's kernel returns NCHW)."""
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    block = conv_gn_relu(device).train(training)
    x = layout(torch.randn(2, 16, 12, 12, device=device), True).requires_grad_(training)
    with torch.set_grad_enabled(training), \
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        y = block(x)
    assert is_channels_last(y), f"{precision} {device.type}: output strides {y.stride()}"
    if training:
        y.float().sum().backward()
        assert is_channels_last(x.grad), f"input gradient strides {x.grad.stride()}"


def test_torchs_own_group_norm_layout_is_recorded(device):
    """What torch's nn.GroupNorm does with a channels_last input on this device, recorded: a pass
    where it keeps the layout (CPU), an xfail saying so where it returns NCHW (CUDA has), which
    gn_det's GroupNorm corrects (the test above)."""
    gn = nn.GroupNorm(8, 32).to(device)
    y = gn(layout(torch.randn(2, 32, 12, 12, device=device), True))
    if not is_channels_last(y):
        pytest.xfail(f"torch {torch.__version__}'s GroupNorm returns NCHW for a channels_last "
                     f"input on {device.type}; gn_det.layers.GroupNorm restores channels_last")


def test_the_layout_is_restored_where_torch_returns_nchw(monkeypatch, device):
    """gn_det's GroupNorm where torch's kernel returns NCHW (as CUDA's has; simulated here by
    making F.group_norm's output contiguous): channels_last out, the same values."""
    real = F.group_norm
    monkeypatch.setattr(F, "group_norm", lambda *a, **k: real(*a, **k).contiguous())
    gn = GroupNorm(8, 32).to(device)
    x = layout(torch.randn(2, 32, 12, 12, device=device), True).requires_grad_()
    with torch.no_grad():
        y = gn(x)  # no gradient: F.group_norm's path on every device
    assert is_channels_last(y)
    torch.testing.assert_close(y, real(x, 8, gn.weight, gn.bias, gn.eps))
