"""Device acceptance, whole detector: the tiny toy RetinaNet (cli_harness.TINY_MODEL_OPTS: R-18,
64 px, 32-channel FPN, one head conv) with each norm preset, run as users run it on the device
under test (tests/device/conftest.py: --device / GN_DET_TEST_DEVICE, default cpu).

Per preset: training steps through AccumulatingTrainer in fp32 (NCHW and channels_last), bf16
and fp16 with GradScaler, with and without accumulation, finite and close to fp32; inference
in bf16 / fp16 against fp32, matched per detection; a checkpoint saved with AtomicCheckpointer
and loaded into a fresh model gives the same detections; that checkpoint, loaded on CPU, exports
to ONNX and matches in ONNX Runtime. A precision the device lacks is skipped with
gn_det.engine.precision's own one-line reason (fp16 on CPU: CUDA only; bf16 on a CPU without
bf16 units or a GPU without bf16).
"""
import copy
import functools
import itertools
import math

import pytest
import torch

from cli_harness import TINY_MODEL_OPTS
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from gn_det import export
from gn_det.benchmark.export_speed import like_trained
from gn_det.checkpoint import AtomicCheckpointer
from gn_det.config import load_cfg
from gn_det.engine.accumulation import AccumulatingTrainer
from gn_det.engine.optimizer import build_optimizer
from gn_det.engine.precision import (model_precision, prepare_for_inference,
                                     prepare_for_training, resolve_precision)
from gn_det.layers import NORM_TYPES, canonical_norm_type
from gn_det.utils.errors import one_line
from helpers import TOY_CONFIG

pytestmark = pytest.mark.device

# preset -> (backbone norm, FPN and head norm, WS everywhere). FrozenBN is detectron2's default
# RetinaNet (FrozenBN backbone, no norm in FPN and head); the others are one norm everywhere.
PRESETS = {"FrozenBN": ("FrozenBN", "none", False), "GN": ("GN", "GN", False),
           "GN+WS": ("GN", "GN", True)}
NEW_NORMS = ("BRN", "FRN", "EvoNormS0")  # the small-batch norms, where this gn_det has them


def _available(norm: str) -> bool:
    try:
        return norm in NORM_TYPES and bool(canonical_norm_type(norm))
    except ValueError:  # e.g. timm's norms without timm
        return False


PRESETS.update({n: (n, n, False) for n in NEW_NORMS if _available(n)})
BATCH_INDEPENDENT = ("FrozenBN", "GN", "GN+WS", "FRN", "EvoNormS0")
IMAGES, SIZE, STEPS = 2, 64, 2
# The toy config's anchors (32-512 px, for 256 px images) scaled to the 64 px images: anchors far
# larger than the image turn rounding noise in the box deltas into whole pixels after clipping.
ANCHORS = "[[8], [16], [32], [64], [128]]"
# (precision, accumulation micro-steps, channels_last in fp32). bf16 / fp16 always run
# channels_last (MODEL.PRECISION's fast path); fp32 runs both layouts.
MODES = [("fp32", 1, False), ("fp32", 2, True), ("bf16", 1, False), ("bf16", 2, False),
         ("fp16", 1, False), ("fp16", 2, False)]
# Relative tolerance of the first step's losses and per-component gradient norms against fp32
# (NCHW, the same accumulation), by precision. bf16 keeps 8 significant bits (~2.4 decimal
# digits: each rounding is off by up to 2^-8 = 0.4 %), fp16 11 bits (2^-11 = 0.05 %), and a step
# rounds every conv's inputs and weights, forward and backward. The losses are fp32 sums over
# every anchor of the heads' outputs cast to fp32, so they stay near one rounding; a gradient
# norm is a sum of squares through ~25 layers of rounded products, so it drifts further.
# Measured here on CPU over every preset (first step): bf16 <= 1.0 % loss, <= 5.1 % gradient
# norm; the CPU fp16 stand-in <= 0.06 % and <= 0.9 %; fp32 channels_last against NCHW (only the
# order of the sums differs) <= 1e-5 and <= 1e-4. Tolerances are ~3x those. On CUDA, fp32 convs
# run cuDNN's TF32 by default (10 mantissa bits, fp16's), so fp32 there gets fp16's tolerance
# and the fp16 one is doubled for its TF32 reference.
TOLERANCE = {"fp32": (1e-4, 1e-3), "tf32": (0.01, 0.05), "bf16": (0.03, 0.15),
             "fp16": (0.005, 0.03)}


def tolerance(name: str, device: torch.device):
    """(loss, gradient-norm) relative tolerance of precision `name` on `device` (TOLERANCE)."""
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    if tf32 and name in ("fp32", "fp16"):
        return TOLERANCE["tf32"]
    return TOLERANCE[name]


def precision_on(device: torch.device, name: str, channels_last: bool = False):
    """gn_det's resolution of MODEL.PRECISION `name` on `device`, or a skip with its reason."""
    try:
        return resolve_precision(name, str(device), fallback="error", channels_last=channels_last)
    except ValueError as e:
        pytest.skip(f"{name} on {device.type}: {one_line(e)}")


def tiny_cfg(norm: str, device: torch.device):
    backbone, rest, ws = PRESETS[norm]
    opts = [*TINY_MODEL_OPTS, "MODEL.DEVICE", str(device), "MODEL.WEIGHTS", "",
            "SOLVER.IMS_PER_BATCH", str(IMAGES), "SOLVER.BASE_LR", "0.01",
            "MODEL.ANCHOR_GENERATOR.SIZES", ANCHORS]
    for component, kind in (("BACKBONE", backbone), ("FPN", rest), ("RETINANET_HEAD", rest)):
        opts += [f"MODEL.NORMS.{component}.TYPE", kind, f"MODEL.NORMS.{component}.WS", str(ws)]
    return load_cfg(TOY_CONFIG, opts, resolve_device=False)


@functools.lru_cache(maxsize=None)
def _template(norm: str, trained_like: bool):
    """The preset's model on CPU, built once from seed 0 (like_trained: made to detect)."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(norm, torch.device("cpu")))
    return like_trained(model) if trained_like else model


def tiny_model(norm: str, device: torch.device, trained_like: bool = False):
    """A fresh copy of the preset's seed-0 model on `device`, in training mode."""
    return copy.deepcopy(_template(norm, trained_like)).to(device).train()


def images(count: int = IMAGES, size: int = SIZE, seed: int = 0):
    """Training inputs: random images with three random boxes each (CPU tensors, as detectron2's
    loaders give them; the model moves them)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        inst = Instances((size, size))
        xy = torch.rand(3, 2, generator=g) * size * 0.5
        inst.gt_boxes = Boxes(torch.cat([xy, xy + size * 0.3], dim=1))
        inst.gt_classes = torch.randint(0, 4, (3,), generator=g)
        out.append({"image": torch.rand(3, size, size, generator=g) * 255, "instances": inst,
                    "height": size, "width": size})
    return out


def micro_batches(k: int):
    """Every step sees the same IMAGES images: one batch, or k micro-batches of IMAGES / k."""
    data, per = images(), IMAGES // k
    return itertools.cycle([data[i * per:(i + 1) * per] for i in range(k)])


def component(name: str) -> str:
    if name.startswith("backbone.bottom_up."):
        return "backbone"
    return "fpn" if name.startswith("backbone.") else "head"


def gradient_norms(model) -> dict:
    """L2 norm of the gradient of each component (backbone, fpn, head), in fp32."""
    sq = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            sq[component(name)] = sq.get(component(name), 0.0) + float(p.grad.float().square()
                                                                         .sum())
    return {k: math.sqrt(v) for k, v in sq.items()}


def train(norm, device, precision, k, steps=STEPS, trained_like=False):
    """`steps` optimizer steps of the preset's model as gn_det's Trainer runs them; returns the
    model, the trainer and, per step, (losses, gradient norms, grads finite, scale before, after)
    where the scale is the GradScaler's (None without one)."""
    cfg = tiny_cfg(norm, device)
    model = tiny_model(norm, device, trained_like)
    trainer = AccumulatingTrainer(model, micro_batches(k), build_optimizer(cfg, model), k,
                                  precision=precision)
    scaler, log = trainer.grad_scaler, []
    with EventStorage(0) as storage:
        for step in range(steps):
            trainer.iter = storage.iter = step
            before = scaler.get_scale() if scaler is not None else None
            trainer.run_step()
            losses = {n: v[0] for n, v in storage.latest().items() if "loss" in n}
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            finite = all(bool(torch.isfinite(g).all()) for g in grads)
            log.append((losses, gradient_norms(model), finite, before,
                        scaler.get_scale() if scaler is not None else None))
    return model, trainer, log


@functools.lru_cache(maxsize=None)
def fp32_reference(norm: str, device_name: str, k: int):
    """The first step's losses and gradient norms in fp32, NCHW, `k` micro-steps."""
    device = torch.device(device_name)
    _, _, log = train(norm, device, precision_on(device, "fp32"), k, steps=1)
    return log[0][0], log[0][1]


def first_update(log):
    """The first step the GradScaler did not skip (a skipped step leaves the weights as they
    were, so the next step's gradient is the first step's again); every step without a scaler."""
    for entry in log:
        if entry[3] is None or entry[4] >= entry[3]:
            return entry
    pytest.fail(f"GradScaler skipped all {len(log)} steps (scale {log[0][3]} -> {log[-1][4]})")


@pytest.mark.slow
@pytest.mark.parametrize("name, k, channels_last", MODES,
                         ids=[f"{n}-k{k}" + ("-channels_last" if c else "") for n, k, c in MODES])
@pytest.mark.parametrize("norm", list(PRESETS))
def test_training_steps_are_finite_and_match_fp32(norm, name, k, channels_last, device):
    """STEPS optimizer steps of IMAGES images each (in k micro-steps): every loss finite, every
    gradient finite (or, with fp16's GradScaler, the step skipped and the scale lowered), the
    weights moved and finite, the layout and grad scaler the precision implies; the first
    update's losses and per-component gradient norms within TOLERANCE of fp32 (NCHW, the same
    accumulation)."""
    precision = precision_on(device, name, channels_last)
    if k > 1 and norm not in BATCH_INDEPENDENT:
        pytest.skip(f"{norm} takes statistics over the batch, and one 64 px image per micro-step "
                    f"leaves one value per channel at P7 (1x1): too small for it, not the device")
    model, trainer, log = train(norm, device, precision, k)
    for step, (losses, _, finite, before, after) in enumerate(log):
        assert losses and all(math.isfinite(v) for v in losses.values()), (step, losses)
        assert finite or (after is not None and after < before), f"step {step}: grads not finite"
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert (trainer.grad_scaler is not None) == (name == "fp16")
    conv = model.backbone.bottom_up.stem.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == precision.channels_last
    assert not torch.equal(conv.detach().cpu(), _template(norm, False).backbone.bottom_up
                           .stem.conv1.weight), "no step updated the weights"
    if name == "fp32" and not channels_last:
        return  # the reference itself
    ref_losses, ref_norms = fp32_reference(norm, str(device), k)
    losses, norms, *_ = first_update(log)
    loss_tol, grad_tol = tolerance(name, device)
    for term, ref in ref_losses.items():
        assert abs(losses[term] - ref) <= loss_tol * abs(ref), (term, losses[term], ref)
    for part, ref in ref_norms.items():
        assert abs(norms[part] - ref) <= grad_tol * ref, (part, norms[part], ref)


def detections(model, image):
    """The model's detections of one CHW image at its own size, as numpy arrays."""
    with torch.no_grad():
        out = model([{"image": image}])[0]["instances"].to("cpu")
    return export.Detections.of(out)


def made_to_detect(model):
    """like_trained (norm affines and statistics off their initial values, every anchor scored
    above the test threshold), with box deltas of a trained model's size (bbox_pred weights
    N(0, 0.01): deltas ~0.2, not exp()-sized boxes clipped to the image)."""
    model = like_trained(model)
    with torch.no_grad():
        model.head.bbox_pred.weight.normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
    return model


# How far bf16 / fp16 inference may move a detection of the fp32 model: a box coordinate by
# box_atol px + box_rtol x its size, a score by score_atol. bf16 rounds the inputs and weights
# of ~25 convs to 8 significant bits (2^-8 = 0.4 % each); measured here on CPU over every
# preset: <= 0.46 px, <= 1.9 % of the box, <= 0.002 in score, so bf16 gets ~3x that. fp16 has
# 3 more bits (1/8 of bf16's error; measured <= 0.06 px, 0.3 %, 0.0002) and gets 1/4 of bf16's
# tolerance: on CUDA its fp32 reference runs cuDNN's TF32 convolutions (torch's default), which
# round to fp16's 10 bits too.
INFERENCE_TOLERANCE = {"bf16": export.Tolerance(0.5, 0.03, 0.006),
                       "fp16": export.Tolerance(0.125, 0.0075, 0.0015)}


@pytest.mark.parametrize("name", ["bf16", "fp16"])
@pytest.mark.parametrize("norm", list(PRESETS))
def test_inference_matches_fp32(norm, name, device):
    """prepare_for_inference(bf16 / fp16) against the same weights in fp32, per detection
    (export.match_detections: paired by class and IoU, never by index), within
    INFERENCE_TOLERANCE, every detection paired. NMS and the top-k cuts are off, so every
    detection is one anchor's: which of two near-tied boxes NMS keeps is decided by any
    rounding, fp32's included, and is no measure of a precision; every score is above the
    threshold (made_to_detect), so no detection is near that cut-off."""
    precision = precision_on(device, name)
    model = made_to_detect(copy.deepcopy(_template(norm, False))).to(device)
    model.test_nms_thresh = 1.0  # suppress nothing (IoU > 1 never happens)
    model.test_topk_candidates = model.max_detections_per_image = 10**6
    mixed = prepare_for_inference(copy.deepcopy(model), precision)
    for seed in range(2):
        image = images(1, seed=seed)[0]["image"]
        ref, got = detections(model, image), detections(mixed, image)
        assert len(ref) > 100, "the model detects too little: the comparison would be empty"
        cmp = export.match_detections(ref, got, INFERENCE_TOLERANCE[name],
                                      model.test_score_thresh)
        assert cmp.ok and cmp.matched == len(ref) == len(got), f"{norm} {name}: {cmp.describe()}"


def best_precision(device: torch.device):
    """What a user's auto run trains in here: bf16 on a CPU with bf16 units, fp16 on CUDA (with
    SOLVER.AMP.ENABLED), else fp32."""
    return resolve_precision("auto", str(device), amp=device.type == "cuda")


@pytest.mark.slow
@pytest.mark.parametrize("norm", list(PRESETS))
def test_checkpoint_round_trip_and_onnx_export(norm, device, tmp_path):
    """Trained in the device's own precision (best_precision), saved with AtomicCheckpointer,
    loaded into a fresh model prepared the same way: the same state and the same detections.
    Then the checkpoint loaded into a fresh fp32 model on CPU (export's path) exports to ONNX,
    which export_model checks in ONNX Runtime against eager PyTorch per detection."""
    pytest.importorskip("onnxruntime")
    precision = best_precision(device)
    model, _, _ = train(norm, device, precision, k=1, trained_like=True)
    AtomicCheckpointer(model, str(tmp_path)).save("model_final")
    path = str(tmp_path / "model_final.pth")

    fresh = prepare_for_training(build_model(tiny_cfg(norm, device)), precision)
    AtomicCheckpointer(fresh).load(path)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert model_precision(fresh) == precision
    image = images(1, 96)[0]["image"]
    model.eval(), fresh.eval()
    with precision.autocast():
        ref, got = detections(model, image), detections(fresh, image)
    assert len(ref) > 0, "the model detects nothing: the comparison would be empty"
    cmp = export.match_detections(ref, got)
    assert cmp.ok and cmp.max_box_diff == 0 and cmp.max_score_diff == 0, cmp.describe()

    cpu_cfg = tiny_cfg(norm, torch.device("cpu"))
    cpu_model = build_model(cpu_cfg)
    AtomicCheckpointer(cpu_model).load(path)
    samples = [export.Sample("random", image, 96, 96)]
    try:
        report = export.export_model(cpu_model.eval(), cpu_cfg, samples, str(tmp_path / "onnx"),
                                     formats=["onnx"])
    except export.ExportError as e:
        pytest.fail(f"{norm}: {e}")
    result = report["formats"]["onnx"]["samples"]["random"]
    assert result["matched"] == result["reference"] > 0, result
