"""Precision benchmark (`gn-det-benchmark precision`): the fast path (MODEL.PRECISION bf16:
autocast, channels_last, fp32 GN / WS statistics, WS once per forward) against fp32 eager, and
the machine's peak it is bounded by.

- peak: a large matmul and a large 3x3 conv (256 channels), fp32 / bf16, NCHW / channels_last,
  1 and 2 threads, in GFLOP/s (best of the repeats: what the hardware can do);
- inference: RetinaNet R50-FPN GN+WS (configs/RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml),
  one 512x768 image, random weights: fp32 eager vs prepare_for_inference(bf16);
- training: the real-data R-18 GN+WS config (configs/real/retinanet_R_18_FPN_gnws_cpu.yaml),
  2 images of 416x576: one AccumulatingTrainer step in fp32 vs bf16, each with the config's
  optimizer as gn_det builds it (torch's fused step, SOLVER.FUSED), and both with the per-tensor
  loop step (SOLVER.FUSED False) to show what the fused step gives.
Variants are timed side by side (timing.interleaved) and every ratio is a paired ratio with its
bootstrap interval. Convolution FLOPs per call are counted with hooks, so the achieved conv
throughput (conv FLOPs / whole step time: a lower bound) reads against the peak.
"""
import copy
import itertools
import os
import time
from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .timing import CLOCKS, interleaved, medians, paired_ratio

INFERENCE_CONFIG = "RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml"
TRAINING_CONFIG = "real/retinanet_R_18_FPN_gnws_cpu.yaml"
INFERENCE_SIZE, QUICK_INFERENCE_SIZE = (512, 768), (128, 192)
TRAINING_SIZE, QUICK_TRAINING_SIZE = (416, 576), (128, 192)
TRAINING_BATCH = 2
TARGETS = {"inference": 0.25, "training": 0.30}  # fast path / fp32, lower is better
PARTS = ("peak", "inference", "training")


# ------------------------------------------------------------------------------ peak

def _best_seconds(fn: Callable, args: tuple, repeats: int, **kwargs) -> float:
    fn(*args, **kwargs)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best


def peak_benchmark(threads: Sequence[int] = (1, 2), quick: bool = False,
                   repeats: int = 5) -> Dict:
    """GFLOP/s of a square matmul and a 3x3 conv (256 -> 256 channels, one image) in fp32 and
    bf16, the conv in NCHW and channels_last, at each thread count (best of `repeats`)."""
    n = 512 if quick else 2048
    c, h, w = 256, *((24, 32) if quick else (96, 128))
    conv_flop = 2 * c * c * 9 * h * w
    before = torch.get_num_threads()
    rows = {}
    try:
        for t in threads:
            torch.set_num_threads(t)
            row = {}
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
                seconds = _best_seconds(torch.matmul, (a, b), repeats)
                row[f"matmul_{name}"] = round(2 * n ** 3 / seconds / 1e9, 1)
                for layout, fmt in (("nchw", torch.contiguous_format),
                                    ("channels_last", torch.channels_last)):
                    x = torch.randn(1, c, h, w, dtype=dtype).contiguous(memory_format=fmt)
                    k = torch.randn(c, c, 3, 3, dtype=dtype).contiguous(memory_format=fmt)
                    seconds = _best_seconds(F.conv2d, (x, k), repeats, padding=1)
                    row[f"conv_{name}_{layout}"] = round(conv_flop / seconds / 1e9, 1)
            rows[f"{t}_threads"] = row
    finally:
        torch.set_num_threads(before)
    return {"matmul": f"{n}x{n} @ {n}x{n}", "conv": f"3x3, {c}->{c} channels, 1x{h}x{w}",
            "gflops": rows}


# ------------------------------------------------------------------------------ models

def conv_flops(model: nn.Module, run: Callable[[], object], backward: bool = False) -> float:
    """Convolution FLOPs of one `run()` (2 x multiply-adds): forward, plus with `backward` the
    weight gradient of every trainable conv and the input gradient where the input needs one."""
    total = [0.0]

    def hook(module, args, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        flop = 2.0 * output.numel() * k
        if backward:
            flop *= 1 + int(module.weight.requires_grad) + int(args[0].requires_grad)
        total[0] += flop

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def _load(config_dir: str, config: str, size: Sequence[int]):
    from detectron2.modeling import build_model

    from .. import modeling  # noqa: F401  (registers gn_det's components)
    from ..config import load_cfg

    cfg = load_cfg(os.path.join(config_dir, config),
                   ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", min(size),
                    "INPUT.MAX_SIZE_TEST", max(size)])
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _ratios(samples: Dict, pairs: Dict, targets: Dict) -> Dict:
    out = {}
    for label, (num, den) in pairs.items():
        r = paired_ratio(samples[num], samples[den])
        out[label] = {"ratio": round(r.ratio, 3), "ci": [round(r.low, 3), round(r.high, 3)],
                      "pairs": r.pairs, "target": targets.get(label)}
    return out


def inference_benchmark(config_dir: str, precision, repeats: int = 5, quick: bool = False,
                        clock: str = "wall") -> Dict:
    """Seconds per image of the R50 GN+WS RetinaNet in fp32 eager and prepared for `precision`
    (gn_det.engine.precision.prepare_for_inference), interleaved."""
    from ..engine.precision import prepare_for_inference

    size = QUICK_INFERENCE_SIZE if quick else INFERENCE_SIZE
    cfg, model = _load(config_dir, INFERENCE_CONFIG, size)
    model.eval()
    fast = prepare_for_inference(copy.deepcopy(model), precision)
    gen = torch.Generator().manual_seed(1)
    inputs = [{"image": torch.rand(3, *size, generator=gen) * 255, "height": size[0],
               "width": size[1]}]

    def call(net):
        def run():
            with torch.no_grad():
                return net(inputs)
        return run

    variants = {"fp32": call(model), "fast": call(fast)}
    flop = conv_flops(model, variants["fp32"])
    detections = {k: len(v()[0]["instances"]) for k, v in variants.items()}
    samples = interleaved(variants, repeats, label="inference ", clock=CLOCKS[clock])
    seconds = medians(samples)
    return {"config": INFERENCE_CONFIG, "size": list(size), "precision": precision.describe(),
            "seconds": {k: round(v, 4) for k, v in seconds.items()}, "detections": detections,
            "conv_gflop": round(flop / 1e9, 1),
            "conv_gflops_achieved": {k: round(flop / v / 1e9, 1) for k, v in seconds.items()},
            "ratios": _ratios(samples, {"inference fast / fp32": ("fast", "fp32")},
                              {"inference fast / fp32": TARGETS["inference"]})}


def _training_batch(cfg, size: Sequence[int], images: int, boxes: int = 4):
    from detectron2.structures import Boxes, Instances

    gen = torch.Generator().manual_seed(1)
    h, w = size
    batch = []
    for _ in range(images):
        xy = torch.rand(boxes, 2, generator=gen) * torch.tensor([w, h]) * 0.6
        wh = (0.1 + 0.3 * torch.rand(boxes, 2, generator=gen)) * torch.tensor([w, h])
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.randint(0, cfg.MODEL.RETINANET.NUM_CLASSES, (boxes,),
                                        generator=gen)
        batch.append({"image": torch.rand(3, h, w, generator=gen) * 255, "instances": inst,
                      "height": h, "width": w})
    return batch


def training_benchmark(config_dir: str, precision, repeats: int = 5, quick: bool = False,
                       clock: str = "wall") -> Dict:
    """Seconds per training step (AccumulatingTrainer.run_step, gn_det's optimizer) of the
    real-data R-18 GN+WS config in fp32 and in `precision`, interleaved."""
    from detectron2.utils.events import EventStorage

    from ..engine.accumulation import AccumulatingTrainer
    from ..engine.optimizer import build_optimizer
    from ..engine.precision import Precision

    size = QUICK_TRAINING_SIZE if quick else TRAINING_SIZE
    cfg, model = _load(config_dir, TRAINING_CONFIG, size)
    batch = _training_batch(cfg, size, TRAINING_BATCH)
    setups = {"fp32": (Precision("fp32"), True), "fast": (precision, True),
              "fp32_loop": (Precision("fp32"), False), "fast_loop": (precision, False)}
    trainers, flop = {}, 0.0
    for name, (prec, fused) in setups.items():
        net = copy.deepcopy(model)
        step_cfg = cfg.clone()
        step_cfg.defrost()
        step_cfg.SOLVER.FUSED = fused
        optimizer = build_optimizer(step_cfg, net)
        trainers[name] = AccumulatingTrainer(net, itertools.repeat(batch), optimizer, 1,
                                             precision=prec)
    with EventStorage(0):
        fp32 = trainers["fp32"]
        flop = conv_flops(fp32.model, fp32.run_step, backward=True)
        samples = interleaved({k: t.run_step for k, t in trainers.items()}, repeats,
                              label="training ", clock=CLOCKS[clock])
    seconds = medians(samples)
    pairs = {"training fast / fp32": ("fast", "fp32"),
             "training fast / fp32, both with the loop optimizer step": ("fast_loop", "fp32_loop"),
             "training fast / fp32 with the loop step": ("fast", "fp32_loop"),
             "training fused / loop optimizer step, fast path": ("fast", "fast_loop")}
    return {"config": TRAINING_CONFIG, "size": list(size), "images": TRAINING_BATCH,
            "precision": precision.describe(),
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "conv_gflop": round(flop / 1e9, 1),
            "conv_gflops_achieved": {k: round(flop / v / 1e9, 1) for k, v in seconds.items()},
            "ratios": _ratios(samples, pairs, {"training fast / fp32": TARGETS["training"]})}


def precision_benchmark(config_dir: str, repeats: int = 5, quick: bool = False,
                        clock: str = "wall", parts: Sequence[str] = PARTS) -> Dict:
    """The whole benchmark: the bf16 fast path where this CPU has bf16 units (else the fp32 it
    falls back to, which then reads ~1.00x), against fp32."""
    from ..engine.precision import resolve_precision

    precision = resolve_precision("bf16", "cpu")
    result = {"precision": precision.describe(), "torch_threads": torch.get_num_threads()}
    if "peak" in parts:
        result["peak"] = peak_benchmark(quick=quick, repeats=max(3, repeats))
    if "inference" in parts:
        result["inference"] = inference_benchmark(config_dir, precision, repeats, quick, clock)
    if "training" in parts:
        result["training"] = training_benchmark(config_dir, precision, repeats, quick, clock)
    result["ratios"] = {k: v for part in ("inference", "training") if part in result
                        for k, v in result[part]["ratios"].items()}
    return result
