"""gn_det.layers.timm_norms: FRN + TLU and EvoNorm-S0 are timm's layers, built with the spec's
eps and groups, equal to the papers' formulas; without timm their names are refused in one
line."""
import pytest
import torch

from gn_det.layers import NormSpec, build_norm, canonical_norm_type
from gn_det.layers import timm_norms

timm_layers = pytest.importorskip("timm.layers")


def _randomized(m, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 0.5)
    return m


def frn_tlu(x, gamma, beta, tau, eps):
    """Singh & Krishnan's Algorithm 1: nu2 = mean of x^2 over H, W; TLU = max(y, tau)."""
    v = (1, -1, 1, 1)
    nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
    y = gamma.view(v) * x / torch.sqrt(nu2 + eps) + beta.view(v)
    return torch.maximum(y, tau.view(v))


def evonorm_s0(x, gamma, beta, v_param, groups, eps):
    """Liu et al.'s EvoNorm-S0: x * sigmoid(v x) / group std(x) * gamma + beta."""
    n, c, h, w = x.shape
    v = (1, -1, 1, 1)
    std = torch.sqrt(x.reshape(n, groups, -1).var(dim=2, unbiased=False) + eps)
    std = std.repeat_interleave(c // groups, dim=1).view(n, c, 1, 1)
    return x * torch.sigmoid(v_param.view(v) * x) / std * gamma.view(v) + beta.view(v)


@pytest.mark.parametrize("name", ["FRN", "frn_tlu"])
def test_frn_is_timms_tlu_layer_and_the_papers_formula(name):
    m = _randomized(build_norm(NormSpec(name, eps=1e-4), 16))
    assert type(m) is timm_layers.FilterResponseNormTlu2d and m.eps == 1e-4 and m.tau is not None
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64) * 3 + 1
    m = m.double()
    torch.testing.assert_close(m(x), frn_tlu(x, m.weight, m.bias, m.tau, 1e-4))


@pytest.mark.parametrize("spec, groups", [
    (NormSpec("EvoNormS0"), 32), (NormSpec("EvoNormS0", num_groups=8), 8),
    (NormSpec("evonorm_s0", channels_per_group=16), 4)])
def test_evonorm_s0_is_timms_layer_grouped_like_gn(spec, groups):
    m = _randomized(build_norm(spec, 64))
    assert type(m) is timm_layers.EvoNorm2dS0 and m.groups == groups and m.v is not None
    x = torch.randn(2, 64, 5, 7, dtype=torch.float64) * 3 + 1
    m = m.double()
    torch.testing.assert_close(m(x), evonorm_s0(x, m.weight, m.bias, m.v, groups, m.eps))


def test_group_count_errors_name_the_layer_and_norm():
    with pytest.raises(ValueError, match=r"^layer fpn.out: EvoNormS0 with G=32 groups needs "
                                         r"C=48 divisible by G"):
        build_norm("EvoNormS0", 48, layer="fpn.out")


def test_no_affine_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^layer head.1: FRN always has an affine \(timm's "
                                         r"FilterResponseNormTlu2d\)"):
        build_norm(NormSpec("FRN", affine=False), 8, layer="head.1")


def test_names_refused_in_one_line_without_timm(monkeypatch):
    monkeypatch.setattr(timm_norms, "timm_available", lambda: False)
    with pytest.raises(ValueError, match=r"^norm type 'EvoNormS0' is timm's EvoNorm2dS0, and "
                                         r"timm is not installed: pip install timm"):
        canonical_norm_type("evonorm_s0")
    assert timm_norms.timm_norm_types() == ()
    assert canonical_norm_type("BRN") == "BRN"  # gn_det's own: no timm needed


def test_module_types_are_the_built_classes():
    assert timm_norms.timm_norm_types() == (timm_layers.FilterResponseNormTlu2d,
                                            timm_layers.EvoNorm2dS0)


@pytest.mark.parametrize("name", ["FRN", "EvoNormS0"])
def test_bf16_under_autocast_keeps_fp32_statistics(name):
    m = build_norm(name, 32)
    x = torch.randn(2, 32, 6, 6) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), m(x), atol=0.1, rtol=0.03)
