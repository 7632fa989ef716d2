"""gn_det.layers.norm against torch.nn.GroupNorm and the GN paper's definition."""
import pytest
import torch
from torch import nn

from detectron2.layers import FrozenBatchNorm2d
from gn_det.layers import NormSpec, build_norm


def paper_group_norm(x, gamma, beta, groups, eps=1e-5):
    """The paper's Figure 3, literally: reshape to (N, G, C/G, H, W), moments over the last 3."""
    n, c, h, w = x.shape
    xg = x.reshape(n, groups, c // groups, h, w)
    mean = xg.mean(dim=(2, 3, 4), keepdim=True)
    var = xg.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
    xg = (xg - mean) / torch.sqrt(var + eps)
    return xg.reshape(n, c, h, w) * gamma.view(1, c, 1, 1) + beta.view(1, c, 1, 1)


def randomize_affine(m):
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()
    return m


@pytest.mark.parametrize("spec,channels,groups", [
    ("GN", 64, 32),
    (NormSpec("GN", num_groups=8), 64, 8),
    (NormSpec("GN", channels_per_group=16), 64, 4),
    ("LN", 48, 1),
    ("IN", 48, 48),
])
def test_group_norms_equal_torch_and_paper(spec, channels, groups):
    m = randomize_affine(build_norm(spec, channels))
    assert type(m) is nn.GroupNorm and m.num_groups == groups
    x = torch.randn(2, channels, 7, 9) * 3 + 1
    ref = randomize_affine(nn.GroupNorm(groups, channels))
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(m(x), ref(x))
    torch.testing.assert_close(m(x), paper_group_norm(x, m.weight, m.bias, groups),
                               atol=1e-5, rtol=1e-5)


def test_in_has_per_channel_affine_and_ln_one_group():
    assert build_norm("IN", 16).weight.shape == (16,)
    assert build_norm("LN", 16).num_groups == 1


def test_eps_and_affine_pass_through():
    m = build_norm(NormSpec("GN", num_groups=4, eps=1e-3, affine=False), 8)
    assert m.eps == 1e-3 and m.weight is None


def test_other_types():
    assert build_norm("", 8) is None and build_norm("none", 8) is None
    assert build_norm(None, 8) is None
    assert type(build_norm("BN", 8)) is nn.BatchNorm2d
    assert isinstance(build_norm("FrozenBN", 8), FrozenBatchNorm2d)
    assert build_norm({"type": "gn", "num_groups": 2}, 8).num_groups == 2


def test_indivisible_channels_error_names_layer_and_valid_counts():
    with pytest.raises(ValueError, match=r"layer fpn_lateral3: GN with G=32 groups needs C=48 "
                                         r"divisible by G; valid group counts for C=48: "
                                         r"\[1, 2, 3, 4, 6, 8, 12, 16, 24, 48\]"):
        build_norm("GN", 48, layer="fpn_lateral3")
    with pytest.raises(ValueError, match=r"layer res2.0.conv1: .*channels_per_group=5.*C=64"):
        build_norm(NormSpec("GN", channels_per_group=5), 64, layer="res2.0.conv1")


def test_bad_specs():
    with pytest.raises(ValueError, match=r"unknown norm type 'Gn2'; valid: none, BN, SyncBN, "
                                         r"FrozenBN, GN, LN, IN"):
        NormSpec("Gn2")
    with pytest.raises(ValueError, match="both set; set one of them"):
        NormSpec("GN", num_groups=32, channels_per_group=16)
    with pytest.raises(ValueError, match="eps must be > 0"):
        NormSpec("GN", eps=0)
    with pytest.raises(TypeError, match="cannot make a NormSpec"):
        NormSpec.of(3)


def test_syncbn_without_process_group_is_refused():
    with pytest.raises(ValueError, match=r"layer head.0: SyncBN needs a torch.distributed process "
                                         r"group.*GN, which needs no synchronization"):
        build_norm("SyncBN", 8, layer="head.0")
