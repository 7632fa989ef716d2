"""gn_det.engine.ema: the EMA of the weights against a hand computation, one update per optimizer
step under gradient accumulation, buffers copied, saved as the checkpoint's "model" with the
trained weights beside it for --resume, the EMA model evaluated by the trainer, and tiny
train_net (the whole small-data recipe) and lazy_train_net (train.ema) runs whose --eval-only of
model_final.pth reproduces the training's own evaluation. The LazyConfig run reuses
test_lazy_train's shrunk toy preset."""
import itertools
import json

import pytest
import torch
from torch import nn

from detectron2.engine.train_loop import HookBase
from gn_det.checkpoint import AtomicCheckpointer
from gn_det.config import load_cfg
from gn_det.data import register_datasets_from_cfg
from gn_det.engine import Trainer
from gn_det.engine.accumulation import AccumulatingTrainer
from gn_det.engine.ema import EMAHook, attach_ema, ema_settings

from cli_harness import run_cli
from helpers import TOY_CONFIG
from test_lazy_train import TOY as LAZY_TOY
from test_lazy_train import run as run_lazy
from test_lazy_train import tiny_overrides


class Tiny(nn.Module):
    """A linear layer + BN (buffers that must be copied, not averaged); called with a batch of
    tensors, it returns a loss dict as detectron2 models do in training."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, batch):
        return {"loss": self.bn(self.fc(torch.stack(batch))).pow(2).mean()}


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def assert_state_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_decay_math_matches_a_hand_computation():
    model = Tiny()
    ema = EMAHook(model, decay=0.9, warmup_power=0)
    expected = None
    for n in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.bn.running_mean.add_(1.0)
        now = params(model)
        expected = now if n == 1 else {k: 0.9 * expected[k] + 0.1 * now[k] for k in now}
        ema.after_step()
        for k, v in ema.module.named_parameters():
            torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ema.module.bn.running_mean, model.bn.running_mean)  # copied
    assert ema.updates == 4


def test_warm_up_decay_follows_timms_formula():
    ema = EMAHook(Tiny(), decay=0.999, warmup_power=0.75)
    assert ema.decay(1) == 0.0  # the first update copies
    for n in (2, 10, 1000, 20000):
        assert ema.decay(n) == pytest.approx(min(0.999, 1 - n ** -0.75))
    assert EMAHook(Tiny(), decay=0.99, warmup_power=0).decay(2) == 0.99


class Snapshots(HookBase):
    """Records the parameters after every trainer step (each optimizer step)."""

    def __init__(self):
        self.seen = []

    def after_step(self):
        self.seen.append(params(self.trainer.model))


def test_updates_once_per_optimizer_step_under_accumulation():
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    steps = []
    real_step = optimizer.step
    optimizer.step = lambda *a, **k: (steps.append(1), real_step(*a, **k))[1]
    data = itertools.cycle([[torch.randn(3) for _ in range(2)] for _ in range(5)])
    trainer = AccumulatingTrainer(model, data, optimizer, accumulate_steps=3)
    snapshots, ema = Snapshots(), EMAHook(model, decay=0.5, warmup_power=0)
    trainer.register_hooks([snapshots, ema])
    trainer.train(0, 4)
    assert len(steps) == 4 and ema.updates == 4  # 12 micro-steps, 4 optimizer steps
    expected = snapshots.seen[0]
    for now in snapshots.seen[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * now[k] for k in now}
    for k, v in ema.module.named_parameters():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-6)


def trained_pair(tmp_path):
    """A Tiny model with an attached EMA after 3 updates, its checkpoint saved in tmp_path."""
    model = Tiny()
    ckpt = AtomicCheckpointer(model, str(tmp_path))
    ema = attach_ema(model, ckpt, {"ENABLED": True, "DECAY": 0.5, "WARMUP_POWER": 0}, "MODEL.EMA")
    ema.before_train()
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.after_step()
    ckpt.save("model_final", iteration=2)
    return model, ema


def test_checkpoint_holds_the_ema_as_model_and_resume_restores_both(tmp_path):
    model, ema = trained_pair(tmp_path)
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert_state_equal(saved["model"], ema.module.state_dict())
    assert_state_equal(saved["ema"]["training_model"], model.state_dict())
    assert saved["ema"]["updates"] == 3
    assert not torch.equal(saved["model"]["fc.weight"], model.fc.weight)

    resumed = Tiny()  # another initialization
    ckpt = AtomicCheckpointer(resumed, str(tmp_path))
    ema2 = attach_ema(resumed, ckpt, {"enabled": True, "decay": 0.5, "warmup_power": 0},
                      "train.ema")
    ckpt.resume_or_load("", resume=True)
    ema2.before_train()  # must keep the restored average
    assert_state_equal(resumed.state_dict(), model.state_dict())
    assert_state_equal(ema2.module.state_dict(), ema.module.state_dict())
    assert ema2.updates == 3
    with torch.no_grad():  # one more identical step continues identically
        for p, q in zip(model.parameters(), resumed.parameters()):
            step = torch.randn_like(p)
            p.add_(step)
            q.add_(step)
    ema.after_step()
    ema2.after_step()
    assert_state_equal(ema2.module.state_dict(), ema.module.state_dict())


def test_deploy_and_fine_tune_loads_get_the_ema_weights(tmp_path):
    _, ema = trained_pair(tmp_path)
    deployed = Tiny()  # as --eval-only and gn-det-export load a file: strictly, "model" only
    AtomicCheckpointer(deployed, strict=True).load(str(tmp_path / "model_final.pth"))
    assert_state_equal(deployed.state_dict(), ema.module.state_dict())
    fresh = Tiny()  # MODEL.WEIGHTS of a new EMA run (not resumed): the average starts there
    ckpt = AtomicCheckpointer(fresh, str(tmp_path / "new"))
    ema3 = attach_ema(fresh, ckpt, {"ENABLED": True}, "MODEL.EMA")
    ckpt.resume_or_load(str(tmp_path / "model_final.pth"), resume=False)
    ema3.before_train()
    assert_state_equal(ema3.module.state_dict(), ema.module.state_dict())
    assert ema3.updates == 0


@pytest.mark.parametrize("settings, message", [
    ({"ENABLED": True, "DECAY": 1.0}, r"^MODEL.EMA.DECAY: 1.0 is not a decay"),
    ({"ENABLED": True, "WARMUP_POWER": -1}, r"^MODEL.EMA.WARMUP_POWER: -1.0 is negative"),
    ({"ENABLED": True, "DECAYS": 0.9}, r"MODEL.EMA.DECAYS: not an EMA setting; expected one of "
                                       r"MODEL.EMA.ENABLED, MODEL.EMA.DECAY"),
])
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises((ValueError, KeyError), match=message):
        ema_settings(settings, "MODEL.EMA")
    assert ema_settings({"ENABLED": False, "DECAY": 5}, "MODEL.EMA") is None  # off: unread


@pytest.mark.slow
def test_trainer_evaluates_and_checkpoints_the_ema_model(tiny_train_opts, monkeypatch):
    cfg = load_cfg(TOY_CONFIG, tiny_train_opts + ["MODEL.EMA.ENABLED", "True",
                                                  "SOLVER.ACCUMULATE_STEPS", "2",
                                                  "SOLVER.MAX_ITER", "2"])
    register_datasets_from_cfg(cfg)
    tested = []
    monkeypatch.setattr(Trainer, "test", classmethod(
        lambda cls, cfg, model, evaluators=None: tested.append(model) or {"bbox": {"AP": 1.0}}))
    trainer = Trainer(cfg)
    assert trainer.checkpointer.saved_model is trainer.ema.module
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert tested and all(m is trainer.ema.module for m in tested)
    assert trainer.ema.updates == 2  # 2 optimizer steps of 2 micro-steps each


@pytest.mark.slow
def test_train_net_with_the_whole_recipe_then_eval_only(tiny_train_opts, tmp_path):
    """4 iterations of train_net with every recipe piece on (LSJ at 64x64), then --eval-only of
    model_final.pth: the same numbers as the training's final evaluation of its EMA model."""
    out = tmp_path / "out"
    recipe = ["INPUT.LSJ.ENABLED", "True", "INPUT.LSJ.IMAGE_SIZE", "[64, 64]",
              "INPUT.COLOR_JITTER.ENABLED", "True", "INPUT.CROP.ENABLED", "True",
              "INPUT.CROP.SIZE", "[0.5, 0.5]", "INPUT.CROP.PROB", "0.5",
              "MODEL.EMA.ENABLED", "True", "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", str(out)]
    code, _, err = run_cli("train_net", ["--config-file", TOY_CONFIG, *tiny_train_opts, *recipe])
    assert code == 0, err[-3000:]
    trained = json.loads((out / "metrics_final.json").read_text())
    saved = torch.load(out / "model_final.pth", weights_only=False)
    assert saved["ema"]["updates"] == 4 and trained["iteration"] == 4
    evaluated = tmp_path / "eval"
    code, _, err = run_cli("train_net", ["--config-file", TOY_CONFIG, "--eval-only",
                                         *tiny_train_opts, *recipe, "OUTPUT_DIR", str(evaluated),
                                         "MODEL.WEIGHTS", str(out / "model_final.pth")])
    assert code == 0, err[-3000:]
    again = json.loads((evaluated / "metrics_final.json").read_text())
    assert again["results"] == trained["results"]
    for line in (out / "metrics.json").read_text().splitlines():  # strict JSON: no NaN token
        json.loads(line, parse_constant=lambda token: pytest.fail(f"{token} in metrics.json"))


@pytest.mark.slow
def test_lazy_train_with_train_ema_then_resume_and_eval_only(tiny_shapes, tmp_path):
    """tools/lazy_train_net.py with train.ema: 4 iterations, --resume to 6 (the average carried
    on: 6 updates), --eval-only of model_final.pth: the training's final numbers again."""
    out = tmp_path / "out"
    ema = ["train.ema.enabled=true", "train.ema.decay=0.9"]
    r = run_lazy("--config-file", LAZY_TOY, *tiny_overrides(tiny_shapes, out), *ema)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_lazy("--config-file", LAZY_TOY, "--resume",
                 *tiny_overrides(tiny_shapes, out, max_iter=6), *ema)
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(out / "model_final.pth", weights_only=False)["ema"]["updates"] == 6
    trained = json.loads((out / "metrics_final.json").read_text())
    r = run_lazy("--config-file", LAZY_TOY, "--eval-only", *tiny_overrides(tiny_shapes, out),
                 f"train.init_checkpoint={out / 'model_final.pth'}")
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((out / "metrics_final.json").read_text())
    assert again["results"] == trained["results"] and trained["iteration"] == 6
