"""GPU benchmark (`gn-det-benchmark gpu`): what GN and GN+WS cost on a GPU against FrozenBN, read
beside detectron2's model zoo, and what bf16 / fp16 save against fp32.

RetinaNet R50-FPN (gn_det's FrozenBN, GN-all and GN+WS-all presets) and Mask R-CNN R50-FPN
(FrozenBN: detectron2's own COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml, 2fc box head;
GN and GN+WS: configs/RCNN/mask_rcnn_R_50_FPN_1x_gn[ws].yaml, 4conv1fc heads, the zoo's GN
setup), random weights, random 800x1333 images with 4 boxes (and box masks) each:
- training s/iter of AccumulatingTrainer.run_step (the Trainer's step; SGD at learning rate 0, so
  every repeat times the same network) at 1 and 2 images per GPU, and its peak memory
  (torch.cuda.max_memory_allocated over the variant's warm-up steps, less what the variants built
  before it held: weights, gradients, optimizer state and activations, as the zoo reports);
- inference s/image at batch 1, score threshold 0 (100 detections per image, as a trained model
  gives on COCO; Mask R-CNN pastes 100 masks), and its peak memory;
- for each precision MODEL.PRECISION allows on the device (fp32, bf16, fp16; CUDA's fp32 convs run
  TF32 unless torch.backends.cudnn.allow_tf32 is off).
All variants of one model and batch (3 norms x the precisions) are resident at once and timed
interleaved (timing.interleaved, CUDA-synchronized), so every ratio is a paired ratio with its
bootstrap interval. Reference: the zoo's Mask R50-FPN 3x table (8 V100s, 2 images per GPU, fp32).

Sized for one H100 in ~5 minutes. Without CUDA it refuses in one line; `--device cpu --quick` runs
the same code on an R-18 at 64x96 (what the test suite checks), never for numbers.
"""
import copy
import itertools
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..model_zoo import get_config_file
from ..utils.progress import Phases
from .timing import interleaved, medians, paired_ratio

HELP = ("R50-FPN RetinaNet / Mask R-CNN on CUDA, 800x1333: train s/iter and peak memory at 1-2 "
        "images per GPU, inference s/img, for FrozenBN / GN / GN+WS and fp32 / bf16 / fp16")
NORMS = ("FrozenBN", "GN", "GN+WS")
D2_ZOO = "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
MODELS: Dict[str, Dict[str, str]] = {
    "retinanet": {"FrozenBN": "RetinaNet/retinanet_R_50_FPN_1x.yaml",
                  "GN": "RetinaNet/retinanet_R_50_FPN_1x_gn_all.yaml",
                  "GN+WS": "RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml"},
    "mask_rcnn": {"FrozenBN": D2_ZOO, "GN": "RCNN/mask_rcnn_R_50_FPN_1x_gn.yaml",
                  "GN+WS": "RCNN/mask_rcnn_R_50_FPN_1x_gnws.yaml"},
}
# detectron2 model zoo, Mask R-CNN R50-FPN 3x (8 V100, 2 images per GPU, fp32): training s/iter,
# inference s/image, training memory in GB (torch.cuda.max_memory_allocated).
ZOO = {"FrozenBN": {"train_s": 0.261, "infer_s": 0.043, "memory_gb": 3.4},
       "SyncBN": {"train_s": 0.371, "infer_s": 0.053, "memory_gb": 5.5},
       "GN": {"train_s": 0.356, "infer_s": 0.069, "memory_gb": 7.3}}
SIZE, QUICK_SIZE = (800, 1333), (64, 96)
BATCHES = (1, 2)
PRECISIONS = ("fp32", "bf16", "fp16")
BOXES = 4
# --quick: the same code on a model small enough for a CPU test (R-18, narrow FPN and heads).
QUICK_OPTS = ("MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
              "MODEL.RESNETS.STRIDE_IN_1X1", False, "MODEL.FPN.OUT_CHANNELS", 32,
              "MODEL.NORMS.GN.NUM_GROUPS", 8, "MODEL.RETINANET.NUM_CONVS", 1,
              "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
              "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
              "MODEL.RPN.POST_NMS_TOPK_TEST", 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32)


def add_arguments(parser) -> None:
    group = parser.add_argument_group("gpu")
    group.add_argument("--device", default="cuda",
                       help="gpu: cuda or cuda:N (default cuda); cpu only with --quick, which "
                            "checks the code path on tiny sizes")


def run(args) -> Dict:
    return gpu_benchmark(args.device, quick=args.quick, repeats=args.repeats)


def check_device(device: str, quick: bool) -> torch.device:
    """The device to run on, or a one-line ValueError: CUDA absent, or CPU without --quick."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"gpu --device {device!r}: not a torch device; valid: cuda, cuda:N, "
                         f"cpu (with --quick)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"gpu: needs CUDA (torch {torch.__version__} sees no GPU here); "
                         f"`--device cpu --quick` runs the same code on tiny sizes")
    if dev.type not in ("cuda", "cpu") or (dev.type == "cpu" and not quick):
        raise ValueError(f"gpu --device {device}: needs CUDA; only `--device cpu --quick` runs "
                         f"elsewhere (tiny sizes, to check the code path, not for numbers)")
    return dev


def precisions_on(device: torch.device) -> Dict[str, object]:
    """name -> gn_det Precision for each of PRECISIONS this device runs, or the reason why not."""
    from ..engine.precision import resolve_precision
    from ..utils.errors import one_line

    out = {}
    for name in PRECISIONS:
        try:
            out[name] = resolve_precision(name, str(device), fallback="error")
        except ValueError as e:
            out[name] = one_line(e)
    return out


def model_cfg(arch: str, norm: str, device: torch.device, quick: bool):
    from detectron2 import model_zoo

    from ..config import load_cfg

    config = MODELS[arch][norm]
    path = (model_zoo.get_config_file(config.split("//", 1)[1]) if config.startswith("detectron2")
            else get_config_file(config))
    size = QUICK_SIZE if quick else SIZE
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", str(device), "SOLVER.BASE_LR", 0.0,
            "INPUT.MIN_SIZE_TEST", min(size), "INPUT.MAX_SIZE_TEST", max(size),
            "MODEL.RETINANET.SCORE_THRESH_TEST", 0.0, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
            *(QUICK_OPTS if quick else ())]
    return load_cfg(path, [str(o) if isinstance(o, (int, float)) else o for o in opts],
                    resolve_device=False)


def build_on_cpu(arch: str, norm: str, device: torch.device, quick: bool):
    """(cfg, model on CPU, seed 0): the variant's template, copied to the device per use."""
    from detectron2.modeling import build_model

    from .. import modeling  # noqa: F401  (registers gn_det's components)

    cfg = model_cfg(arch, norm, torch.device("cpu"), quick)
    torch.manual_seed(0)
    model = build_model(cfg)
    cfg.defrost()
    cfg.MODEL.DEVICE = str(device)
    return cfg, model


def training_batch(cfg, images: int, size: Sequence[int], masks: bool, seed: int = 1):
    """Random images with BOXES random boxes each (and their box masks for Mask R-CNN)."""
    from detectron2.structures import BitMasks, Boxes, Instances

    gen = torch.Generator().manual_seed(seed)
    h, w = size
    classes = (cfg.MODEL.RETINANET.NUM_CLASSES if cfg.MODEL.META_ARCHITECTURE.endswith("RetinaNet")
               else cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    batch = []
    for _ in range(images):
        xy = torch.rand(BOXES, 2, generator=gen) * torch.tensor([w, h]) * 0.6
        wh = (0.1 + 0.3 * torch.rand(BOXES, 2, generator=gen)) * torch.tensor([w, h])
        boxes = torch.cat([xy, xy + wh], dim=1)
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.randint(0, classes, (BOXES,), generator=gen)
        if masks:
            grid = torch.zeros(BOXES, h, w, dtype=torch.bool)
            for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                grid[i, y0:y1, x0:x1] = True
            inst.gt_masks = BitMasks(grid)
        batch.append({"image": torch.rand(3, h, w, generator=gen) * 255, "instances": inst,
                      "height": h, "width": w})
    return batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device, before: int):
    """GB allocated at the peak since the last reset, less `before` (None on CPU)."""
    if device.type != "cuda":
        return None
    return round((torch.cuda.max_memory_allocated(device) - before) / 2**30, 3)


def _timed(fn: Callable, device: torch.device) -> Callable:
    def run():
        _sync(device)
        fn()
        _sync(device)
    return run


def train_group(templates, precisions, device, batch: int, size, warmup: int, repeats: int):
    """Every norm x precision of one model at `batch` images: built one after the other (each
    one's warm-up alone measures its peak memory), then timed interleaved."""
    from detectron2.utils.events import EventStorage

    from ..engine.accumulation import AccumulatingTrainer
    from ..engine.optimizer import build_optimizer

    steps, cells, storages = {}, {}, []
    for norm, (cfg, template) in templates.items():
        data = training_batch(cfg, batch, size, cfg.MODEL.MASK_ON)
        for name, precision in precisions.items():
            key = f"{norm}/{name}"
            before = _allocated(device)
            _reset_peak(device)
            model = copy.deepcopy(template).to(device).train()
            trainer = AccumulatingTrainer(model, itertools.repeat(data),
                                          build_optimizer(cfg, model), 1, precision=precision)
            storage = EventStorage(0)
            storages.append(storage)

            def step(trainer=trainer, storage=storage):
                with storage:
                    trainer.run_step()
            try:
                for _ in range(warmup):
                    _timed(step, device)()
            except FloatingPointError as e:  # a random network's loss overflowed
                cells[key] = {"error": str(e).split(";")[0]}
                del model, trainer
                continue
            cells[key] = {"peak_memory_gb": _peak_gb(device, before)}
            steps[key] = _timed(step, device)
    try:
        samples = interleaved(steps, repeats, warmup=0, label=f"train {batch} img ")
    except FloatingPointError as e:
        return {k: {"error": str(e).split(";")[0]} for k in cells}, {}
    for key, seconds in medians(samples).items():
        cells[key]["s_per_iter"] = round(seconds, 4)
    return cells, samples


def inference_group(templates, precisions, device, size, warmup: int, repeats: int):
    """Every norm x precision of one model prepared for inference (prepare_for_inference), one
    image per call: peak memory per variant during its warm-up, then timed interleaved."""
    from ..engine.precision import prepare_for_inference

    calls, cells = {}, {}
    gen = torch.Generator().manual_seed(2)
    image = [{"image": torch.rand(3, *size, generator=gen) * 255, "height": size[0],
              "width": size[1]}]
    for norm, (_, template) in templates.items():
        for name, precision in precisions.items():
            key = f"{norm}/{name}"
            before = _allocated(device)
            _reset_peak(device)
            model = prepare_for_inference(copy.deepcopy(template).to(device), precision)

            def call(model=model):
                with torch.no_grad():
                    return model(image)
            for _ in range(warmup):
                out = call()
            _sync(device)
            cells[key] = {"peak_memory_gb": _peak_gb(device, before),
                          "detections": len(out[0]["instances"])}
            calls[key] = _timed(call, device)
    samples = interleaved(calls, repeats, warmup=0, label="inference ")
    for key, seconds in medians(samples).items():
        cells[key]["s_per_image"] = round(seconds, 4)
    return cells, samples


def ratios(samples: Dict[str, List[float]], cells: Dict, measure: str) -> Dict:
    """Paired time ratios (with intervals) and memory ratios: each norm against FrozenBN in the
    same precision, each precision against fp32 with the same norm."""
    out = {}
    keys = [k for k in cells if k in samples]
    for key in keys:
        norm, name = key.split("/")
        for label, ref in ((f"{norm} / FrozenBN, {name}", f"FrozenBN/{name}"),
                           (f"{name} / fp32, {norm}", f"{norm}/fp32")):
            if ref == key or ref not in samples:
                continue
            r = paired_ratio(samples[key], samples[ref])
            entry = {measure: round(r.ratio, 3), "ci": [round(r.low, 3), round(r.high, 3)]}
            mem, ref_mem = cells[key].get("peak_memory_gb"), cells[ref].get("peak_memory_gb")
            if mem and ref_mem:
                entry["memory"] = round(mem / ref_mem, 3)
            out[label] = entry
    return out


def zoo_ratios() -> Dict:
    fb, gn, sync = ZOO["FrozenBN"], ZOO["GN"], ZOO["SyncBN"]
    return {f"{norm} / FrozenBN": {"train": round(z["train_s"] / fb["train_s"], 2),
                                   "memory": round(z["memory_gb"] / fb["memory_gb"], 2),
                                   "inference": round(z["infer_s"] / fb["infer_s"], 2)}
            for norm, z in (("GN", gn), ("SyncBN", sync))}


def gpu_benchmark(device: str = "cuda", quick: bool = False, repeats: int = 8,
                  warmup: int = 3, archs: Sequence[str] = tuple(MODELS)) -> Dict:
    """The whole benchmark (module docstring); returns numbers, ratios and the tables."""
    dev = check_device(device, quick)
    if quick:
        warmup, repeats = 1, min(repeats, 2)
    warmup = max(warmup, 1)  # the inference warm-up's output gives the detection count
    size = QUICK_SIZE if quick else SIZE
    resolved = precisions_on(dev)
    precisions = {k: v for k, v in resolved.items() if not isinstance(v, str)}
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False  # detectron2's default: no per-shape autotuning
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "torch": torch.__version__, "size": list(size), "quick": quick,
              "repeats": repeats, "warmup": warmup,
              "fp32_convs": ("TF32" if dev.type == "cuda" and torch.backends.cudnn.allow_tf32
                             else "fp32"),
              "precisions": {k: (v if isinstance(v, str) else v.describe())
                             for k, v in resolved.items()},
              "zoo": ZOO, "zoo_ratios": zoo_ratios(), "train": {}, "inference": {}, "ratios": {}}
    phases = Phases(len(archs) * (len(BATCHES) + 1), log=lambda s: print(s, flush=True),
                    prefix="gpu ")
    start = time.perf_counter()
    for arch in archs:
        templates = {norm: build_on_cpu(arch, norm, dev, quick) for norm in NORMS}
        for batch in BATCHES:
            cells, samples = train_group(templates, precisions, dev, batch, size, warmup,
                                         repeats)
            result["train"].setdefault(arch, {})[str(batch)] = cells
            result["ratios"][f"{arch} train, {batch} img/GPU"] = ratios(samples, cells,
                                                                         "time")
            _release(dev)
            phases.done(f"{arch} training, {batch} image(s) per GPU")
        cells, samples = inference_group(templates, precisions, dev, size, warmup, repeats)
        result["inference"][arch] = cells
        result["ratios"][f"{arch} inference"] = ratios(samples, cells, "time")
        _release(dev)
        phases.done(f"{arch} inference")
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["tables"] = tables(result)
    print(result["tables"], flush=True)
    return result


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ tables

def _cell(value, ref, digits=3) -> str:
    """'0.356 (1.36x)' against a reference, '0.261' without one, '-' for no value."""
    if value is None:
        return "-"
    if ref:
        return f"{value:.{digits}f} ({value / ref:.2f}x)"
    return f"{value:.{digits}f}"


def _norm_cells(row: List[Dict], key: str, digits: int, error: Optional[str] = None) -> str:
    """One table row's cells for the norms in `row` (FrozenBN first): `key` and then peak memory,
    each with its ratio to FrozenBN's; a cell holding an error reads `error` where given."""
    t0, m0 = row[0].get(key), row[0].get("peak_memory_gb")
    times = [error if error and "error" in c else _cell(c.get(key), t0 if i else None, digits)
             for i, c in enumerate(row)]
    memory = [_cell(c.get("peak_memory_gb"), m0 if i else None, 2) for i, c in enumerate(row)]
    return " | ".join(times + memory)


def tables(result: Dict) -> str:
    """The Markdown tables of docs/PERFORMANCE.md's GPU section, from a result."""
    zoo, ratio = result["zoo"], result["zoo_ratios"]["GN / FrozenBN"]
    lines = [f"Training on {result['device']} at {result['size'][0]}x{result['size'][1]} "
             f"(fp32 convs: {result['fp32_convs']}): s/iter and peak GB, ratio to FrozenBN",
             "", "| model | img/GPU | precision | FrozenBN s/it | GN s/it | GN+WS s/it | "
             "FrozenBN GB | GN GB | GN+WS GB |", "|---|---|---|---|---|---|---|---|---|",
             f"| zoo Mask R50-FPN 3x (V100) | 2 | fp32 | {zoo['FrozenBN']['train_s']} | "
             f"{zoo['GN']['train_s']} ({ratio['train']}x) | - | {zoo['FrozenBN']['memory_gb']} | "
             f"{zoo['GN']['memory_gb']} ({ratio['memory']}x) | - |"]
    for arch, per_batch in result["train"].items():
        for batch, cells in per_batch.items():
            for name in result["precisions"]:
                row = [cells.get(f"{n}/{name}", {}) for n in NORMS]
                if not any(row):
                    continue
                lines.append(f"| {arch} | {batch} | {name} | "
                             + _norm_cells(row, "s_per_iter", 3, "loss not finite") + " |")
    lines += ["", "Inference, batch 1: s/image and peak GB, ratio to FrozenBN", "",
              "| model | precision | FrozenBN s/img | GN s/img | GN+WS s/img | FrozenBN GB | "
              "GN GB | GN+WS GB |", "|---|---|---|---|---|---|---|---|",
              f"| zoo Mask R50-FPN 3x (V100) | fp32 | {zoo['FrozenBN']['infer_s']} | "
              f"{zoo['GN']['infer_s']} ({ratio['inference']}x) | - | - | - | - |"]
    for arch, cells in result["inference"].items():
        for name in result["precisions"]:
            row = [cells.get(f"{n}/{name}", {}) for n in NORMS]
            if not any(row):
                continue
            lines.append(f"| {arch} | {name} | " + _norm_cells(row, "s_per_image", 4) + " |")
    lines += ["", "Paired time ratios [95% interval] (and memory ratios):", ""]
    for group, entries in result["ratios"].items():
        for label, r in entries.items():
            mem = f", memory {r['memory']:.2f}x" if "memory" in r else ""
            lines.append(f"- {group}: {label}: {r['time']:.3f}x [{r['ci'][0]:.3f}, "
                         f"{r['ci'][1]:.3f}]{mem}")
    return "\n".join(lines)
