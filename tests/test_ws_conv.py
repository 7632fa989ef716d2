"""gn_det.layers.ws_conv against timm's StdConv2d, the paper's formula, gradcheck and folding."""
import pytest
import torch
from timm.layers import StdConv2d
from torch import nn

from detectron2.layers import Conv2d
from gn_det.layers import WSConv2d, WSSpec, fold_ws, standardize_weight


@pytest.mark.parametrize("eps", [1e-6, 1e-5, 1e-3])
def test_timm_style_equals_timm_stdconv2d(eps):
    ours = WSConv2d(8, 16, 3, padding=1, bias=False, ws_style="timm", ws_eps=eps)
    peer = StdConv2d(8, 16, 3, padding=1, bias=False, eps=eps)
    peer.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 11, 13)
    torch.testing.assert_close(ours(x), peer(x), atol=1e-5, rtol=1e-5)


def test_mmcv_style_equals_formula():
    conv = WSConv2d(4, 6, 3, padding=1, ws_style="mmcv", ws_eps=1e-5)
    w = conv.weight.detach()
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    std = w.reshape(6, -1).std(dim=1, unbiased=True).view(6, 1, 1, 1)
    expected = (w - mean) / (std + 1e-5)
    torch.testing.assert_close(conv.standardized_weight(), expected)
    x = torch.randn(1, 4, 5, 5)
    ref = nn.functional.conv2d(x, expected, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref)


def test_conventions_differ_and_defaults():
    w = torch.randn(3, 2, 3, 3)
    assert not torch.allclose(standardize_weight(w, "timm", 1e-6), standardize_weight(w, "mmcv", 1e-5))
    assert WSSpec(True, "timm").effective_eps == 1e-6
    assert WSSpec(True, "MMCV").effective_eps == 1e-5
    assert WSSpec(True, "mmcv", 1e-4).effective_eps == 1e-4


@pytest.mark.parametrize("style", ["timm", "mmcv"])
def test_gradcheck_float64(style):
    conv = WSConv2d(3, 4, 3, padding=1, ws_style=style, ws_eps=1e-4).double()
    x = torch.randn(2, 3, 5, 5, dtype=torch.double, requires_grad=True)
    w = conv.weight

    def f(x, w):
        return nn.functional.conv2d(x, standardize_weight(w, style, 1e-4), conv.bias, padding=1)

    assert torch.autograd.gradcheck(f, (x, w))


def test_keeps_norm_and_activation_kwargs():
    conv = WSConv2d(4, 8, 1, norm=nn.GroupNorm(2, 8), activation=torch.relu)
    out = conv(torch.randn(2, 4, 3, 3))
    assert (out >= 0).all() and isinstance(conv, Conv2d)


def test_fold_ws_keeps_outputs():
    model = nn.Sequential(
        WSConv2d(3, 8, 3, padding=1, norm=nn.GroupNorm(4, 8), activation=torch.relu),
        nn.Sequential(WSConv2d(8, 8, 3, stride=2, ws_style="mmcv", bias=True)),
        Conv2d(8, 4, 1),
    ).eval()
    x = torch.randn(2, 3, 16, 16)
    before = model(x)
    fold_ws(model)
    assert not any(isinstance(m, WSConv2d) for m in model.modules())
    assert isinstance(model[0].norm, nn.GroupNorm)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


def test_bad_ws_specs():
    with pytest.raises(ValueError, match=r"unknown WS style 'bit'; valid: timm, mmcv"):
        WSConv2d(3, 3, 1, ws_style="bit")
    with pytest.raises(ValueError, match="WS eps must be >= 0"):
        WSSpec(True, "timm", -1.0)


def test_fold_ws_updates_list_references():
    """detectron2's FPN keeps its convs in plain lists that forward uses: folding must reach them."""
    class ListHolder(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = WSConv2d(3, 4, 3, padding=1)
            self.convs = [self.a]

        def forward(self, x):
            return self.convs[0](x)

    m = ListHolder().eval()
    x = torch.randn(1, 3, 8, 8)
    before = m(x)
    fold_ws(m)
    assert type(m.a) is Conv2d and m.convs[0] is m.a
    torch.testing.assert_close(m(x), before, atol=1e-5, rtol=1e-5)
