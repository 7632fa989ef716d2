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
    assert not torch.allclose(standardize_weight(w, "timm", 1e-6),
                              standardize_weight(w, "mmcv", 1e-5))
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
    """detectron2's FPN keeps its convs in plain lists that forward uses: folding must reach
    them."""
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


def _fresh(conv, x):
    """What `conv` must output: the weight standardized now, no cache involved."""
    w = standardize_weight(conv.weight.detach(), conv.ws_style, conv.ws_eps)
    return nn.functional.conv2d(x, w, conv.bias, padding=conv.padding)


def test_eval_reuses_standardized_weight_until_it_changes():
    conv = WSConv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        first = conv.standardized_weight()
        assert conv.standardized_weight() is first  # cached
        conv.weight.mul_(2).add_(0.5)  # in place: the version counter moves
        assert conv.standardized_weight() is not first
        torch.testing.assert_close(conv(x), _fresh(conv, x))
    state = {k: torch.randn_like(v) for k, v in conv.state_dict().items()}
    conv.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), _fresh(conv, x))
        conv.weight = nn.Parameter(torch.randn_like(conv.weight))  # a new tensor altogether
        torch.testing.assert_close(conv(x), _fresh(conv, x))
        conv.weight.data.copy_(torch.randn_like(conv.weight))  # .data bypasses the counter
        conv.clear_ws_cache()
        torch.testing.assert_close(conv(x), _fresh(conv, x))


def test_cache_never_stale_across_optimizer_steps_and_mode_switches():
    torch.manual_seed(0)
    conv = WSConv2d(3, 4, 3, padding=1)
    opt = torch.optim.SGD(conv.parameters(), lr=0.5, momentum=0.9)
    x = torch.randn(2, 3, 6, 6)
    for _ in range(3):
        conv.eval()
        with torch.no_grad():
            torch.testing.assert_close(conv(x), _fresh(conv, x))
        conv.train()
        loss = conv(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # no_grad in train mode, right after the step
            torch.testing.assert_close(conv(x), _fresh(conv, x))


def test_training_gradients_do_not_use_the_cache():
    torch.manual_seed(0)
    conv = WSConv2d(3, 4, 3, padding=1, ws_style="mmcv")
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        conv(x)  # fills the cache
    assert conv.standardized_weight().grad_fn is not None
    conv(x).sum().backward()
    w = conv.weight.detach().clone().requires_grad_()
    nn.functional.conv2d(x, standardize_weight(w, "mmcv", conv.ws_eps), conv.bias,
                         padding=1).sum().backward()
    torch.testing.assert_close(conv.weight.grad, w.grad)


def test_frozen_weight_uses_cache_and_passes_input_gradients():
    conv = WSConv2d(3, 4, 3, padding=1)
    conv.weight.requires_grad_(False)  # as in stages frozen by FREEZE_AT
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    with torch.inference_mode():
        conv(x.detach())  # an inference-mode cache entry must not leak into autograd
    conv(x).sum().backward()
    assert conv.standardized_weight() is conv.standardized_weight()
    x_ref = x.detach().clone().requires_grad_()
    _fresh(conv, x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_fold_ws_after_weight_change_uses_current_weight():
    conv = WSConv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        conv(x)
        conv.weight.add_(1.0)
        expected = _fresh(conv, x)
    folded = fold_ws(conv)
    torch.testing.assert_close(folded(x), expected, atol=1e-5, rtol=1e-5)


def test_fold_ws_keeps_frozen_parameters_frozen():
    """A frozen stage (FREEZE_AT) must not become trainable by folding."""
    model = nn.Sequential(WSConv2d(3, 4, 3, bias=True), WSConv2d(4, 4, 1, bias=False))
    for p in model[0].parameters():
        p.requires_grad_(False)
    folded = fold_ws(model)
    assert [p.requires_grad for p in folded[0].parameters()] == [False, False]
    assert [p.requires_grad for p in folded[1].parameters()] == [True]


# --- precision and memory format: the standardized weight in the conv's dtype and layout,
# computed once per forward pass inside ws_step_cache.

CL = torch.channels_last


@pytest.mark.parametrize("style", ["timm", "mmcv"])
def test_channels_last_weight_standardizes_without_changing_layout(style):
    w = torch.randn(8, 4, 3, 3)
    ref = standardize_weight(w, style, 1e-5)
    got = standardize_weight(w.contiguous(memory_format=CL), style, 1e-5)
    assert got.is_contiguous(memory_format=CL) and not got.is_contiguous()
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_inexact_formulation_is_the_same_formula():
    w = torch.randn(16, 8, 3, 3) * 0.05 + 0.01
    torch.testing.assert_close(standardize_weight(w, "timm", 1e-6, exact=False),
                               standardize_weight(w, "timm", 1e-6), atol=1e-5, rtol=1e-5)


def _spy_conv(conv):
    """Record the weight each F.conv2d call of `conv` receives."""
    seen = []
    forward = conv._conv_forward

    def spy(x, weight, bias):
        seen.append(weight)
        return forward(x, weight, bias)

    conv._conv_forward = spy
    return seen


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("train", [True, False])
def test_under_autocast_the_conv_gets_the_weight_in_its_dtype_and_layout(dtype, train):
    """The standardized weight reaches the conv already in the autocast dtype (no cast on every
    call) and in the input's layout; fp32 statistics, so it equals the fp32 result rounded
    once. (CPU fp16 autocast stands in for CUDA fp16 here.)"""
    torch.manual_seed(0)
    conv = WSConv2d(8, 16, 3, padding=1).train(train)
    seen = _spy_conv(conv)
    x = torch.randn(2, 8, 6, 7).contiguous(memory_format=CL)
    with torch.autocast("cpu", dtype=dtype), torch.set_grad_enabled(train):
        out = conv(x)
        conv(x)
    assert out.dtype == dtype and out.is_contiguous(memory_format=CL)
    for w in seen:
        assert w.dtype == dtype and w.is_contiguous(memory_format=CL)
    ref = standardize_weight(conv.weight.detach(), "timm", conv.ws_eps).to(dtype)
    torch.testing.assert_close(seen[0].detach(), ref, atol=0, rtol=2 ** -7)
    if not train:
        assert seen[0] is seen[1]  # the eval cache holds the bf16 / fp16 weight
    with torch.no_grad():  # outside autocast: fp32 again, NCHW for an NCHW input
        conv(x.contiguous())
    assert seen[-1].dtype == torch.float32 and seen[-1].is_contiguous()


def _count_standardizations(monkeypatch):
    import gn_det.layers.ws_conv as ws_conv

    calls = []
    real = ws_conv.standardize_weight

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ws_conv, "standardize_weight", counting)
    return calls


class SharedConvHead(nn.Module):
    """One WS conv applied to several feature maps, as RetinaNet's head does per FPN level."""

    def __init__(self):
        super().__init__()
        self.conv = WSConv2d(4, 4, 3, padding=1)
        self.other = WSConv2d(4, 2, 1)

    def forward(self, levels):
        return sum(self.other(torch.relu(self.conv(f))).square().mean() for f in levels)


def _levels(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, s, s, generator=g) for s in (8, 4, 2)]


def test_once_per_forward_pass_in_a_step_cache(monkeypatch):
    from gn_det.layers import ws_step_cache

    calls = _count_standardizations(monkeypatch)
    head = SharedConvHead()
    head(_levels()).backward()
    assert len(calls) == 6  # without the cache: every call (3 levels x 2 convs)
    calls.clear()
    with ws_step_cache():
        loss = head(_levels())
    assert len(calls) == 2  # once per conv
    loss.backward()
    with ws_step_cache():  # the next pass computes afresh: its graph is its own
        head(_levels(1)).backward()
    assert len(calls) == 4


def test_step_cache_gives_the_same_gradients_and_accumulates_correctly():
    """Two micro-steps, each in its own ws_step_cache block, accumulate the gradient of one
    pass over both halves; and one pass with the cache equals one without it."""
    from gn_det.layers import ws_step_cache

    torch.manual_seed(0)
    head = SharedConvHead()
    both = [torch.cat([a, b]) for a, b in zip(_levels(0), _levels(1))]
    (head(both) * 2).backward()
    ref = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    with ws_step_cache():
        (head(both) * 2).backward()
    for p, r in zip(head.parameters(), ref):  # summed in another order: fp32 rounding, which
        # grows with the thread count's split of the reductions (3e-6 seen in a full run)
        torch.testing.assert_close(p.grad, r, atol=1e-5 * float(r.abs().max()), rtol=1e-4)
    head.zero_grad()
    for seed in (0, 1):  # mean over 2 images per half = half the mean over 4, times 2
        with ws_step_cache():
            loss = head(_levels(seed))
        loss.backward()
    for p, r in zip(head.parameters(), ref):
        torch.testing.assert_close(p.grad, r, atol=1e-5 * float(r.abs().max()), rtol=1e-4)
