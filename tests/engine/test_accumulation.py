"""gn_det.engine.accumulation: k micro-steps of b images == one step of k*b images with GN, in
fp32 and under AMP (bf16 autocast on CPU; the grad scaler once per optimizer step)."""
import copy
import math

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.utils.events import EventStorage
from gn_det.config import add_gn_det_config
from gn_det.engine.accumulation import (AccumulatingTrainer, check_finite, describe_batch,
                                        scale_for_world)
from gn_det.engine.precision import Precision
from gn_det.layers import WSConv2d


class TinyDetectorLike(nn.Module):
    """Takes a list of images like a detectron2 model; its loss is a mean over images."""

    def __init__(self, norm):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), norm(8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, batch):
        x = torch.stack([d["image"] for d in batch])
        y = torch.stack([d["target"] for d in batch])
        feats = self.body(x).mean(dim=(2, 3))
        per_image = (self.head(feats).squeeze(1) - y) ** 2
        return {"loss_a": per_image.mean(), "loss_b": 0.1 * feats.abs().mean(dim=1).mean()}


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(3, 12, 12, generator=g) * 2 + 1,
             "target": torch.randn((), generator=g)} for _ in range(n)]


def one_update(model, data, micro_batch, k, make_optimizer=None, **trainer_kwargs):
    model = copy.deepcopy(model)
    opt = (make_optimizer(model) if make_optimizer else
           torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4))
    loader = [data[i:i + micro_batch] for i in range(0, len(data), micro_batch)]
    trainer = AccumulatingTrainer(model, loader, opt, accumulate_steps=k, **trainer_kwargs)
    with EventStorage(0) as storage:
        trainer.run_step()
        total = storage.latest()["total_loss"][0]
    return model, total


def update_of(model, data, micro_batch, k, make_optimizer=None, **trainer_kwargs):
    """One step's parameter update (after - before), flattened, and the logged total loss."""
    after, total = one_update(model, data, micro_batch, k, make_optimizer, **trainer_kwargs)
    return torch.cat([(p - q).detach().flatten()
                      for p, q in zip(after.parameters(), model.parameters())]), total


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("k,b", [(4, 2), (2, 1), (8, 1)])
def test_group_norm_accumulation_equals_big_batch(k, b):
    model = TinyDetectorLike(lambda c: nn.GroupNorm(4, c))
    data = images(k * b)
    accumulated, loss_acc = one_update(model, data, b, k)
    big, loss_big = one_update(model, data, k * b, 1)
    for (name, p), q in zip(accumulated.named_parameters(), big.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0, msg=name)
    assert loss_acc == pytest.approx(loss_big, abs=1e-5)  # logged loss is the big-batch loss


@pytest.mark.parametrize("k,b", [(4, 2), (2, 1), (8, 1)])
def test_bf16_amp_accumulation_equals_big_batch_within_bf16(k, b):
    """SOLVER.AMP on CPU: bf16 autocast, no grad scaler. The accumulated update differs from the
    big-batch one only by bf16 rounding. Measured (torch 2.14.1, seeds 0-4, these k, b): 0.15-1.0%
    relative (L2) difference, while bf16 itself moves the big-batch update 0.7-8.5% away from
    fp32's; tolerance 2e-2 (5x bf16's unit roundoff 2^-8)."""
    model = TinyDetectorLike(lambda c: nn.GroupNorm(4, c))
    data = images(k * b)
    acc, loss_acc = update_of(model, data, b, k, amp=True)
    big, loss_big = update_of(model, data, k * b, 1, amp=True)
    fp32, _ = update_of(model, data, k * b, 1)
    assert math.isfinite(loss_acc) and math.isfinite(loss_big)
    assert relative(big, fp32) > 1e-3  # autocast really ran in bf16
    assert relative(acc, big) < 2e-2, relative(acc, big)
    assert loss_acc == pytest.approx(loss_big, rel=2e-2)


class SharedWSDetectorLike(TinyDetectorLike):
    """TinyDetectorLike whose second conv is a WS conv applied to two scales of the features,
    as RetinaNet's head convs serve every FPN level: ws_step_cache reuses one standardized
    weight (and its graph) across the calls of one forward pass."""

    def __init__(self):
        super().__init__(lambda c: nn.GroupNorm(4, c))
        self.body[3] = WSConv2d(8, 8, 3, padding=1)

    def forward(self, batch):
        x = torch.stack([d["image"] for d in batch])
        y = torch.stack([d["target"] for d in batch])
        x = self.body[2](self.body[1](self.body[0](x)))
        feats = sum(self.body[5](self.body[4](self.body[3](f))).mean(dim=(2, 3))
                    for f in (x, x[..., ::2, ::2]))
        per_image = (self.head(feats).squeeze(1) - y) ** 2
        return {"loss_a": per_image.mean(), "loss_b": 0.1 * feats.abs().mean(dim=1).mean()}


@pytest.mark.parametrize("k,b", [(4, 2), (2, 1)])
def test_accumulation_with_the_ws_step_cache_equals_big_batch(k, b, monkeypatch):
    """With a Precision (fp32 here) every micro-step's forward standardizes each WS weight once
    (not once per call) and the accumulated update still equals the big-batch one."""
    import gn_det.layers.ws_conv as ws_conv

    calls = []
    real = ws_conv.standardize_weight
    monkeypatch.setattr(ws_conv, "standardize_weight",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    model = SharedWSDetectorLike()
    data = images(k * b)
    fp32 = Precision("fp32")
    accumulated, loss_acc = one_update(model, data, b, k, precision=fp32)
    assert len(calls) == k  # one WS conv, k forward passes, two calls each
    big, loss_big = one_update(model, data, k * b, 1, precision=fp32)
    for (name, p), q in zip(accumulated.named_parameters(), big.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0, msg=name)
    assert loss_acc == pytest.approx(loss_big, abs=1e-5)


def test_amp_defaults_per_device():
    trainer = AccumulatingTrainer(nn.Linear(2, 1), [], None, 2, amp=True)
    assert (trainer.amp_device, trainer.precision, trainer.grad_scaler) == ("cpu", torch.bfloat16,
                                                                            None)
    fp16 = AccumulatingTrainer(nn.Linear(2, 1), [], None, 2, amp=True, precision=torch.float16)
    assert fp16.grad_scaler is not None  # fp16 always gets a scaler
    assert AccumulatingTrainer(nn.Linear(2, 1), [], None, 2).amp_device is None


def test_grad_scaler_unscales_and_steps_once_per_optimizer_step():
    """A power-of-two loss scale over 4 micro-steps gives exactly the unscaled update (the
    scaler unscales the summed gradients once, then steps); an overflowing scale skips the step
    and halves the scale once (one update() per optimizer step, not per micro-step)."""
    model = TinyDetectorLike(lambda c: nn.GroupNorm(4, c))
    data = images(8)
    plain, _ = update_of(model, data, 2, 4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaled, _ = update_of(model, data, 2, 4, grad_scaler=scaler)
    assert torch.equal(scaled, plain) and scaler.get_scale() == 2.0 ** 10
    for d in data:  # losses ~1e8 (finite) that a 1e38 scale makes overflow
        d["target"] = d["target"] * 1e4
    overflow = torch.amp.GradScaler("cpu", init_scale=1e38)
    skipped, _ = update_of(model, data, 2, 4, grad_scaler=overflow)
    assert skipped.abs().max() == 0 and overflow.get_scale() == pytest.approx(0.5e38)
    trainer = AccumulatingTrainer(model, [], torch.optim.SGD(model.parameters(), lr=0.1),
                                  grad_scaler=overflow)
    assert trainer.state_dict()["grad_scaler"]["scale"] == overflow.get_scale()  # checkpointed


@pytest.mark.parametrize("fused", [True, False])
def test_grad_scaler_with_clipping_clips_the_true_gradients(fused):
    """Under a grad scaler, gradient clipping (detectron2's optimizer wrapper) sees unscaled
    gradients whether torch's fused step (which could take the scale itself) is used or not:
    the update equals the unscaled one."""
    from gn_det.engine.optimizer import build_optimizer
    cfg = add_gn_det_config(get_cfg())
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.FUSED = "AdamW", 1e-2, fused
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE, cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = "norm", 1e-3
    model = TinyDetectorLike(lambda c: nn.GroupNorm(4, c))
    data = images(4)
    make = lambda m: build_optimizer(cfg, m)  # noqa: E731
    plain, _ = update_of(model, data, 2, 2, make)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    scaled, _ = update_of(model, data, 2, 2, make, grad_scaler=scaler)
    assert relative(scaled, plain) < 1e-5


def test_batch_norm_accumulation_differs():
    """The property is GN's: with BN, micro-batch statistics change the update."""
    model = TinyDetectorLike(nn.BatchNorm2d)
    data = images(8)
    accumulated, _ = one_update(model, data, 2, 4)
    big, _ = one_update(model, data, 8, 1)
    diff = max((p - q).abs().max().item()
               for p, q in zip(accumulated.parameters(), big.parameters()))
    assert diff > 1e-4


def test_non_finite_loss_names_iteration_and_terms():
    with pytest.raises(FloatingPointError, match=r"iteration 7 \(micro-step 1\): loss_cls=nan"):
        check_finite({"loss_cls": torch.tensor(float("nan")), "loss_box": torch.tensor(1.0)}, 7, 1)
    model = TinyDetectorLike(lambda c: nn.GroupNorm(4, c))
    data = images(2)
    data[1]["image"][0, 0, 0] = float("inf")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(FloatingPointError, match="loss_a=nan|loss_a=inf"):
        one_update(model, data, 1, 2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.fixture
def cfg():
    cfg = add_gn_det_config(get_cfg())
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER = 16, 0.01, 90000
    cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = (60000, 80000), 1000
    return cfg


def test_scale_for_world_counts_accumulation(cfg):
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8  # tuned for 2 images/GPU on 8 GPUs
    cfg.SOLVER.ACCUMULATE_STEPS = 8
    one_gpu = scale_for_world(cfg, 1)  # 2 images x 8 micro-steps = the reference 16
    assert one_gpu.SOLVER.IMS_PER_BATCH == 2
    assert (one_gpu.SOLVER.BASE_LR, one_gpu.SOLVER.MAX_ITER) == (0.01, 90000)
    cfg.SOLVER.ACCUMULATE_STEPS = 2  # 2 images x 2 on 1 GPU: a quarter of the reference
    quarter = scale_for_world(cfg, 1)
    assert quarter.SOLVER.IMS_PER_BATCH == 2
    assert quarter.SOLVER.BASE_LR == pytest.approx(0.0025)
    assert quarter.SOLVER.MAX_ITER == 360000 and quarter.SOLVER.STEPS == (240000, 320000)
    assert quarter.SOLVER.WARMUP_ITERS == 4000
    assert scale_for_world(quarter, 1).SOLVER.BASE_LR == quarter.SOLVER.BASE_LR  # idempotent
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 0
    assert scale_for_world(cfg, 4) is cfg


def test_describe_batch(cfg):
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.ACCUMULATE_STEPS = 4, 4
    assert describe_batch(cfg, 2).startswith("per-GPU batch: 2 images (SOLVER.IMS_PER_BATCH=4 "
                                             "over 2 processes), SOLVER.ACCUMULATE_STEPS=4 -> "
                                             "effective batch 16")
    with pytest.raises(ValueError, match="IMS_PER_BATCH=4 is not divisible by the 3 processes"):
        describe_batch(cfg, 3)
    with pytest.raises(ValueError, match="ACCUMULATE_STEPS must be >= 1"):
        AccumulatingTrainer(nn.Linear(1, 1), [], None, 0)
