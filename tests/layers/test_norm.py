"""gn_det.layers.norm against torch.nn.GroupNorm, the GN paper's definition, and detectron2's own
get_norm for every name that the installed detectron2 knows."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm, get_norm
from gn_det.layers import NormSpec, build_norm, detectron2_layer_norm
from gn_det.layers import norm as norm_module

from helpers import D2_NORM_NAMES, process_group_of_one




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
    ("LN_CHW", 48, 1),
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


def test_in_has_per_channel_affine_and_ln_chw_one_group():
    assert build_norm("IN", 16).weight.shape == (16,)
    assert build_norm("LN_CHW", 16).num_groups == 1


def _randomized(module):
    """Random affine and running statistics (positive variances), the same for a given seed."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "var" in name
                        else torch.randn(t.shape, generator=g))
    return module


@pytest.mark.parametrize("name", D2_NORM_NAMES)
def test_every_detectron2_name_builds_what_detectron2_builds(name, tmp_path):
    """Same module type, settings and outputs (train and eval) as detectron2's get_norm."""
    theirs = _randomized(get_norm(name, 64))
    # gn_det builds SyncBN only in a process group; torch's SyncBatchNorm trains on CPU without
    with process_group_of_one(tmp_path) if "SyncBN" in name else contextlib.nullcontext():
        ours = build_norm(name, 64)
    assert type(ours) is type(theirs)
    for attr in ("eps", "num_groups", "momentum", "affine", "num_features", "_stats_mode",
                 "normalized_shape", "track_running_stats"):
        assert getattr(ours, attr, None) == getattr(theirs, attr, None), attr
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 64, 5, 6) * 3 + 1
    for train in (True, False):
        ours.train(train), theirs.train(train)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    for key, value in theirs.state_dict().items():  # running statistics updated alike
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.skipif(detectron2_layer_norm() is None, reason="this detectron2 has no LayerNorm")
def test_ln_is_per_pixel_layer_norm_over_channels():
    """detectron2's LN (ConvNeXt / ViTDet): torch's layer_norm over C at each pixel, eps 1e-6."""
    m = _randomized(build_norm("LN", 16))
    assert m.eps == 1e-6 and NormSpec("LN").eps == 1e-6 and NormSpec("GN").eps == 1e-5
    x = torch.randn(2, 16, 5, 7) * 2 + 3
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (16,), m.weight, m.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


def test_ln_refused_in_one_line_where_detectron2_lacks_layer_norm(monkeypatch):
    monkeypatch.setattr(norm_module, "detectron2_layer_norm", lambda: None)
    with pytest.raises(ValueError, match=r"^norm type 'LN' is detectron2's per-pixel LayerNorm "
                                         r"over channels .*this detectron2 lacks.*use LN_CHW for "
                                         r"the GN paper's LN \(GroupNorm\(1, C\)"):
        NormSpec("LN")
    assert build_norm("LN_CHW", 8).num_groups == 1  # the paper's LN needs nothing from detectron2


def test_callable_builds_as_is():
    """How LazyConfig passes norms: a callable `channels -> module`, also through NormSpec."""
    factory = lambda c: NaiveSyncBatchNorm(c, stats_mode="N")  # noqa: E731
    m = build_norm(factory, 8)
    assert type(m) is NaiveSyncBatchNorm and m._stats_mode == "N" and m.num_features == 8
    spec = NormSpec.of(factory)
    assert spec and spec.factory is factory and spec.describe() == "callable(<lambda>)"
    assert type(build_norm(spec, 4)) is NaiveSyncBatchNorm
    assert type(build_norm(nn.BatchNorm2d, 4)) is nn.BatchNorm2d  # a class is a callable too
    with pytest.raises(TypeError, match=r"^layer fpn.0: the norm callable callable\(<lambda>\) "
                                        r"returned int, expected an nn.Module"):
        build_norm(lambda c: c, 4, layer="fpn.0")


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
                                         r"FrozenBN, GN, naiveSyncBN, naiveSyncBN_N, LN, LN_CHW, "
                                         r"IN, BRN, FRN, EvoNormS0 \(nnSyncBN = SyncBN; LN_CHW is "
                                         r"the GN paper's LN; BRN is Batch Renormalization; FRN is "
                                         r"FRN \+ TLU\)"):
        NormSpec("Gn2")
    with pytest.raises(ValueError, match="unknown norm type 'callable'"):
        NormSpec("callable")  # the type of a callable spec is no name a config may use
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
