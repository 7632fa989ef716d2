"""gn_det.engine.precision: what MODEL.PRECISION resolves to and why (one line, bad values in
one line), and the bf16 fast path against fp32 on a whole R-18 RetinaNet: losses, gradients and
detections within bf16's tolerance. No GPU here: fp16 (the CUDA precision) runs on CPU autocast
as a stand-in for the CUDA code path (the same WS / GN / channels_last code)."""
import contextlib
import copy
import logging
import pickle

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from gn_det.config import load_cfg
from gn_det.engine import precision as P
from gn_det.engine.accumulation import AccumulatingTrainer
from gn_det.layers import ws_step_cache

from helpers import REPO

REAL_GNWS = str(REPO / "configs/real/retinanet_R_18_FPN_gnws_cpu.yaml")


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set the CPU feature flags the resolver sees."""
    def set_flags(*flags):
        monkeypatch.setattr(P, "_proc_cpuinfo_flags", lambda: set(flags) | {"avx2"})
    return set_flags


# ------------------------------------------------------------------------------ resolution

@pytest.mark.parametrize("flags, expected", [(("amx_bf16", "avx512_bf16"), "bf16"),
                                             (("avx512_bf16",), "bf16"), ((), "fp32")])
def test_auto_follows_the_cpu_flags(cpu_flags, flags, expected):
    cpu_flags(*flags)
    p = P.resolve_precision("auto", "cpu")
    assert p.name == expected and p.channels_last is (expected == "bf16")
    assert ("this CPU has " + " and ".join(flags)) in p.reason if flags else "neither" in p.reason
    assert "\n" not in p.describe()


def test_bf16_without_bf16_units_follows_the_fallback_setting(cpu_flags):
    cpu_flags()
    fell = P.resolve_precision("bf16", "cpu")
    assert fell.name == "fp32" and "MODEL.PRECISION=bf16" in fell.reason \
        and "falling back to fp32" in fell.reason and "MODEL.PRECISION_FALLBACK" in fell.reason
    with pytest.raises(ValueError, match="MODEL.PRECISION=bf16.*MODEL.PRECISION_FALLBACK") as e:
        P.resolve_precision("bf16", "cpu", fallback="error")
    assert "\n" not in str(e.value)
    assert P.resolve_precision("bf16", "cpu", fallback="none").name == "bf16"
    # detectron2's SOLVER.AMP.ENABLED asks for mixed precision: the same fallback applies
    assert P.resolve_precision("auto", "cpu", amp=True).name == "fp32"


@pytest.mark.parametrize("kwargs, match", [
    (dict(value="fp16"), r"MODEL.PRECISION=fp16 is for CUDA only"),
    (dict(value="float64"), r"MODEL.PRECISION='float64' is not a precision; valid: auto, fp32, "
                            r"bf16, fp16$"),
    (dict(value="fp32", amp=True), r"MODEL.PRECISION=fp32 contradicts SOLVER.AMP.ENABLED=True"),
    (dict(fallback="maybe"), r"MODEL.PRECISION_FALLBACK='maybe'; valid: fp32 .*error .*none"),
    (dict(device="mps"), r"MODEL.DEVICE='mps'"),
])
def test_bad_settings_are_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        P.resolve_precision(**kwargs)
    assert "\n" not in str(e.value)


def test_cuda_keeps_detectron2s_amp(monkeypatch):
    monkeypatch.setattr(P, "_cuda_bf16", lambda: False)
    assert P.resolve_precision("auto", "cuda").name == "fp32"
    assert P.resolve_precision("auto", "cuda:0", amp=True).name == "fp16"
    fp16 = P.resolve_precision("fp16", "cuda")
    assert fp16.dtype == torch.float16 and fp16.channels_last and fp16.device_type == "cuda"
    assert P.resolve_precision("bf16", "cuda").name == "fp32"  # no bf16 on this GPU
    monkeypatch.setattr(P, "_cuda_bf16", lambda: True)
    assert P.resolve_precision("bf16", "cuda").name == "bf16"


def test_config_keys_and_the_one_log_line(cpu_flags, caplog):
    cpu_flags("amx_bf16")
    cfg = load_cfg(REAL_GNWS, ["MODEL.WEIGHTS", ""])
    assert cfg.MODEL.PRECISION == "auto" and cfg.MODEL.PRECISION_FALLBACK == "fp32"
    with caplog.at_level(logging.INFO, logger="detectron2"):
        p = P.precision_from_cfg(cfg)
    lines = [r.getMessage() for r in caplog.records if "gn_det precision" in r.getMessage()]
    assert p.name == "bf16" and lines == [f"gn_det precision: {p.describe()}"]
    assert "amx_bf16" in lines[0] and "MODEL.PRECISION=auto" in lines[0]
    cfg.merge_from_list(["MODEL.PRECISION", "fp32", "MODEL.CHANNELS_LAST", True])
    p = P.precision_from_cfg(cfg, log=False)
    assert (p.name, p.channels_last, p.mixed) == ("fp32", True, False)


def test_lazy_config_keys(cpu_flags):
    from detectron2.config import LazyConfig

    from gn_det.config.lazy import TRAIN_DEFAULTS

    cpu_flags()
    cfg = LazyConfig.load(str(REPO / "configs/lazy/common/train.py"))
    cfg.train.device = "cpu"
    assert TRAIN_DEFAULTS["precision"] == "auto"
    assert P.precision_from_lazy_cfg(cfg, log=False).name == "fp32"
    cfg.train.precision = "fp16"
    with pytest.raises(ValueError, match="train.precision=fp16 is for CUDA only"):
        P.precision_from_lazy_cfg(cfg, log=False)


# ------------------------------------------------------------------------------ numerics

def _model(seed=0):
    cfg = load_cfg(REAL_GNWS, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
                               "MODEL.RETINANET.NUM_CLASSES", 3])
    torch.manual_seed(seed)
    return build_model(cfg)


def _batch(n=2, h=128, w=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        inst = Instances((h, w))
        xy = torch.rand(3, 2, generator=g) * torch.tensor([w, h]) * 0.5
        inst.gt_boxes = Boxes(torch.cat([xy, xy + torch.tensor([w, h]) * 0.3], dim=1))
        inst.gt_classes = torch.randint(0, 3, (3,), generator=g)
        out.append({"image": torch.rand(3, h, w, generator=g) * 255, "instances": inst,
                    "height": h, "width": w})
    return out


def _losses_and_grads(model, precision, data, prepare=True):
    """Losses and gradients of one forward/backward: through the fast path (prepared model,
    autocast, WS step cache), or with `prepare=False` through torch's autocast alone."""
    model = copy.deepcopy(model)
    if prepare:
        P.prepare_for_training(model, precision)
    cache = ws_step_cache() if prepare else contextlib.nullcontext()
    with EventStorage(0), precision.autocast(training=True), cache:
        losses = model(data)
    sum(losses.values()).backward()
    grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, grads


def _gradient_error(grads, ref):
    """(median over parameters of |g - ref| / |ref|, smallest cosine similarity)."""
    assert set(grads) == set(ref)
    rel = sorted(float((grads[k] - r).norm() / r.norm().clamp_min(1e-12)) for k, r in ref.items())
    cos = min(float(torch.nn.functional.cosine_similarity(grads[k].flatten(), r.flatten(), 0))
              for k, r in ref.items())
    return rel[len(rel) // 2], cos


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_fast_path_is_as_close_to_fp32_as_torchs_autocast(name):
    """The R-18 real-data GN+WS RetinaNet at initialization, 2 images of 128x160, one
    forward/backward. Losses within 1% of fp32. Gradients: bf16 keeps 8 bits of mantissa, and
    at initialization, with small deep-layer gradients and WS / GN projecting out most of each
    gradient, torch's own bf16 autocast (NCHW, no gn_det fast path) is ~35% off fp32 per
    parameter (median relative L2). The fast path (channels_last, fast GN backward, WS once per
    pass in bf16) must not add to that: median error <= 1.25x autocast's + 0.01, smallest
    cosine >= autocast's - 0.05. fp16 on CPU stands in for CUDA's fp16 path (same code)."""
    # CPU fp16 kernels are slow: one small image for the fp16 stand-in
    model, data = _model(), (_batch() if name == "bf16" else _batch(1, 64, 96))
    ref_losses, ref = _losses_and_grads(model, P.Precision("fp32"), data)
    mixed = P.Precision(name, "cpu", True)
    stock_losses, stock = _losses_and_grads(model, mixed, data, prepare=False)
    losses, grads = _losses_and_grads(model, mixed, data)
    for k, v in ref_losses.items():
        assert abs(losses[k] - v) <= 0.01 * abs(v), k
        assert abs(stock_losses[k] - v) <= 0.01 * abs(v), k
    stock_median, stock_cos = _gradient_error(stock, ref)
    median, cos = _gradient_error(grads, ref)
    assert median <= 1.25 * stock_median + 0.01, (median, stock_median)
    assert cos >= stock_cos - 0.05, (cos, stock_cos)


@pytest.mark.slow
def test_fp32_channels_last_path_matches_fp32():
    """MODEL.CHANNELS_LAST in fp32 (NHWC weights and activations, the fast GN backward): the
    same losses and gradients as NCHW to fp32 rounding of another summation order."""
    model, data = _model(), _batch()
    ref_losses, ref = _losses_and_grads(model, P.Precision("fp32"), data)
    losses, grads = _losses_and_grads(model, P.Precision("fp32", "cpu", True), data)
    for k, v in ref_losses.items():
        assert abs(losses[k] - v) <= 1e-4 * abs(v), k
    median, cos = _gradient_error(grads, ref)
    assert median < 1e-2 and cos > 0.999, (median, cos)


def _like_trained(model):
    from gn_det.benchmark.export_speed import like_trained

    return like_trained(model)


def _head_outputs(model, data, autocast=False):
    """The head's logits and box deltas (all levels, flattened, fp32) of one inference call."""
    seen = []

    def record(module, args, output):
        seen.append([torch.cat([t.detach().float().flatten() for t in level]) for level in output])

    handle = model.head.register_forward_hook(record)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(data)
    handle.remove()
    return seen[0], out[0]["instances"]


@pytest.mark.slow
def test_bf16_inference_is_as_close_to_fp32_as_torchs_autocast():
    """prepare_for_inference(bf16) on a model made to detect: the head's logits and box deltas
    as close to fp32 as torch's bf16 autocast gets (~0.6% and ~5% relative L2 here; the fast
    path may add at most 25% + 0.005 to that), detections in fp32. The detections themselves are
    no test here: this random model's scores are near-ties, which NMS breaks either way; AP on
    real data is (docs/PERFORMANCE.md). The model still deep-copies and pickles."""
    model = _like_trained(_model())
    data = [{k: v for k, v in d.items() if k != "instances"} for d in _batch(1, 160, 192)]
    ref, _ = _head_outputs(model, data)
    stock, _ = _head_outputs(copy.deepcopy(model), data, autocast=True)
    fast_model = P.prepare_for_inference(copy.deepcopy(model), P.Precision("bf16", "cpu", True))
    fast, instances = _head_outputs(fast_model, data)
    assert not torch.is_autocast_enabled("cpu")  # the hooks leave autocast as they found it
    for name, r, s, f in zip(("logits", "deltas"), ref, stock, fast):
        stock_err, err = float((s - r).norm() / r.norm()), float((f - r).norm() / r.norm())
        assert err <= 1.25 * stock_err + 0.005, (name, err, stock_err)
    assert len(instances) > 0
    assert instances.scores.dtype == torch.float32
    assert instances.pred_boxes.tensor.dtype == torch.float32
    assert P.model_precision(pickle.loads(pickle.dumps(fast_model))).name == "bf16"
    copy.deepcopy(fast_model)


def test_inference_hooks_leave_autocast_off_after_an_error():
    model = P.prepare_for_inference(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)),
                                    P.Precision("bf16", "cpu", True))
    with pytest.raises(RuntimeError):
        model(torch.rand(3, 2, 2))  # too small for the 3x3 kernel
    assert not torch.is_autocast_enabled("cpu")
    assert model(torch.rand(1, 3, 5, 5)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.slow
def test_trainer_with_a_precision_prepares_the_model_and_steps():
    """AccumulatingTrainer given a Precision: channels_last weights, heads' outputs in fp32,
    bf16 autocast, finite losses; with 2 accumulation micro-steps too (each its own WS cache)."""
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    data = _batch()
    trainer = AccumulatingTrainer(model, iter([data[:1], data[1:]] * 2), optimizer, 2,
                                  precision=P.Precision("bf16", "cpu", True))
    assert trainer.amp_device == "cpu" and trainer.precision == torch.bfloat16
    assert trainer.grad_scaler is None and P.model_precision(model).name == "bf16"
    conv = model.backbone.bottom_up.stem.conv1
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    before = conv.weight.detach().clone()
    with EventStorage(0) as storage:
        trainer.run_step()
        assert all(torch.isfinite(torch.tensor(v[0])) for k, v in storage.latest().items()
                   if "loss" in k)
    assert not torch.equal(before, conv.weight.detach())
