"""gn_det.engine.optimizer: GroupNorm affine params get SOLVER.WEIGHT_DECAY_GN."""
from torch import nn

from detectron2.config import get_cfg
from gn_det.config import add_gn_det_config
from gn_det.engine.optimizer import build_optimizer


def decay_of(optimizer):
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


def test_weight_decay_per_kind():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Conv2d(8, 8, 1),
                          nn.BatchNorm2d(8), nn.GroupNorm(1, 8))
    cfg = add_gn_det_config(get_cfg())
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.WEIGHT_DECAY_GN = 1e-4, 5e-5, 0.0
    wd = decay_of(build_optimizer(cfg, model))
    assert wd[id(model[0].weight)] == 1e-4
    assert wd[id(model[1].weight)] == wd[id(model[1].bias)] == wd[id(model[4].weight)] == 0.0
    assert wd[id(model[3].weight)] == 5e-5
    assert len(wd) == len(list(model.parameters()))
    cfg.SOLVER.WEIGHT_DECAY_GN = 1e-5
    assert decay_of(build_optimizer(cfg, model))[id(model[1].weight)] == 1e-5
