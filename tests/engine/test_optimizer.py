"""gn_det.engine.optimizer: GroupNorm affine params get SOLVER.WEIGHT_DECAY_GN; SOLVER.OPTIMIZER
picks SGD or AdamW; SOLVER.FUSED takes torch's fused step where it exists, with the same update."""
import copy

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from gn_det.config import add_gn_det_config
from gn_det.engine.optimizer import build_optimizer, fused_supported


def decay_of(optimizer):
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


def test_weight_decay_per_kind():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Conv2d(8, 8, 1),
                          nn.BatchNorm2d(8), nn.GroupNorm(1, 8))
    cfg = add_gn_det_config(get_cfg())
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM = 1e-4, 5e-5
    cfg.SOLVER.WEIGHT_DECAY_GN = 0.0
    wd = decay_of(build_optimizer(cfg, model))
    assert wd[id(model[0].weight)] == 1e-4
    assert wd[id(model[1].weight)] == wd[id(model[1].bias)] == wd[id(model[4].weight)] == 0.0
    assert wd[id(model[3].weight)] == 5e-5
    assert len(wd) == len(list(model.parameters()))
    cfg.SOLVER.WEIGHT_DECAY_GN = 1e-5
    assert decay_of(build_optimizer(cfg, model))[id(model[1].weight)] == 1e-5


def test_adamw_keeps_the_param_groups_and_clipping():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8))
    cfg = add_gn_det_config(get_cfg())
    assert cfg.SOLVER.OPTIMIZER == "SGD"
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = "AdamW", 1e-3, 0.05
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert type(optimizer) is not torch.optim.AdamW  # detectron2's clipping subclass
    wd = decay_of(optimizer)
    assert wd[id(model[0].weight)] == 0.05 and wd[id(model[1].weight)] == 0.0
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3}


def test_unknown_optimizer_names_the_key():
    cfg = add_gn_det_config(get_cfg())
    cfg.SOLVER.OPTIMIZER = "Adam"
    with pytest.raises(ValueError, match=r"SOLVER.OPTIMIZER 'Adam': expected one of SGD, AdamW"):
        build_optimizer(cfg, nn.Conv2d(3, 8, 3))


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_fused_step_where_torch_has_one_gives_the_same_update(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Conv2d(8, 4, 1))
    cfg = add_gn_det_config(get_cfg())
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = name, 1e-2, 1e-3
    assert cfg.SOLVER.FUSED is True
    x = torch.randn(2, 3, 9, 9)
    updated = {}
    for fused in (True, False):
        cfg.SOLVER.FUSED = fused
        net = copy.deepcopy(model)
        optimizer = build_optimizer(cfg, net)
        assert all(g.get("fused") is (True if fused else None) for g in optimizer.param_groups)
        for _ in range(3):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
        updated[fused] = torch.cat([p.detach().flatten() for p in net.parameters()])
    torch.testing.assert_close(updated[True], updated[False], rtol=1e-5, atol=1e-6)


def test_fused_is_left_out_where_torch_has_none():
    assert fused_supported(torch.optim.AdamW, [nn.Parameter(torch.zeros(2))])
    mixed = [nn.Parameter(torch.zeros(2, dtype=torch.float64)), nn.Parameter(torch.zeros(2))]
    assert not fused_supported(torch.optim.AdamW, mixed)
    assert not fused_supported(torch.optim.AdamW, [])
    assert not fused_supported(torch.optim.RMSprop, [nn.Parameter(torch.zeros(2))])  # no fused step
