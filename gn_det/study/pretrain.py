"""Fine-tuning from pretrained GN+WS weights, end to end, where no ImageNet weights can be
downloaded: a stand-in BiT pretraining of our own, then RetinaNet fine-tuned from it vs from
scratch (same data, seed and schedule).

    gn-det-pretrain --config-file configs/toy/retinanet_BiT_toy_shapes.yaml \\
        --train-json TRAIN.json --val-json VAL.json --image-root IMAGES [--val-image-root VAL]
        --out OUT [KEY VALUE ...]

1. crops (`collect_crops`): every box of the train json, as a square crop with context, labelled
   with its category, plus background windows that overlap no box; the val json's the same way,
   for accuracy only. Nothing of the val split is trained on.
2. pretraining (`pretrain`): timm's own ResNetV2 class with the config's MODEL.BIT depths and
   widths, GN groups and WS eps (`timm_bit`), trained to classify the crops (class-balanced
   sampling, AdamW, cosine), saved as timm saves it: OUT/pretrain/bit_pretrained.pth, its
   `state_dict()`. It is then loaded into the config's backbone through MODEL.WEIGHTS' loader and
   checked against timm's own forward (OUT/pretrain/pretrain.json).
3. fine-tuning (`finetune`): two runs of the config (+ the trailing opts; datasets registered
   from the two jsons), MODEL.WEIGHTS the pretrained file and "" (from scratch), each one
   `python -m gn_det.study.train_cell` process; AP / AP50 / per-class AP of both, CPU seconds and
   the commands in OUT/finetune.json and OUT/finetune.md.

--stage pretrain or finetune runs one part (finetune reuses OUT/pretrain/bit_pretrained.pth).
Needs timm (pip install timm). The command is gn_det.commands.pretrain; bad input ends in one
`pretrain: error:` line naming the file or option.
"""
import dataclasses
import math
import os
import sys
import time
from functools import partial
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import component_spec, load_cfg
from ..data import validate_coco_file
from ..utils.file_io import atomic_write, write_json
from ..utils.text import plural

WEIGHTS_FILE = "bit_pretrained.pth"
ARMS = ("pretrained", "scratch")


# ------------------------------------------------------------------------------ crops

@dataclasses.dataclass
class Crops:
    """Square image crops (N, 3, S, S) uint8 RGB and their labels; the last class is background."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: List[str]

    def counts(self) -> Dict[str, int]:
        found = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, found))


def _square(x, y, w, h, context: float) -> List[float]:
    side = max(w, h) * context
    cx, cy = x + w / 2, y + h / 2
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def _overlap(window: List[float], boxes: np.ndarray) -> np.ndarray:
    """The share of each box's area that `window` covers."""
    if not len(boxes):
        return np.zeros(0)
    w = np.clip(np.minimum(window[2], boxes[:, 2]) - np.maximum(window[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(window[3], boxes[:, 3]) - np.maximum(window[1], boxes[:, 1]), 0, None)
    return w * h / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def collect_crops(json_file: str, image_root: str, size: int = 64, context: float = 1.25,
                  background_per_image: int = 4, seed: int = 0) -> Crops:
    """Crops of every box of a COCO json (validated as training validates it) and background
    windows (box-sized, covering < 10% of any box), resized to size x size by roi_align
    (averaging, so downscaling is anti-aliased; outside the image is zero)."""
    from detectron2.data.detection_utils import read_image
    from torchvision.ops import roi_align

    from ..data import DatasetError, validate_coco_file

    data = validate_coco_file(json_file)[0].data
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    classes = [c["name"] for c in categories] + ["background"]
    by_image: Dict[int, list] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for image in data["images"]:
        anns = by_image.get(image["id"], [])
        path = os.path.join(image_root, image["file_name"])
        try:
            pixels = read_image(path, format="RGB")
        except OSError as e:
            raise DatasetError(f"{json_file}: image {image['file_name']!r} (id {image['id']}): "
                               f"cannot read {path} ({e.strerror or e}); check the image "
                               f"root") from None
        tensor = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float()
        boxes = [_square(*a["bbox"], context) for a in anns]
        crop_labels = [index[a["category_id"]] for a in anns]
        corners = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                             a["bbox"][1] + a["bbox"][3]] for a in anns]).reshape(-1, 4)
        sides = [max(a["bbox"][2], a["bbox"][3]) for a in anns] or [min(tensor.shape[1:]) / 4]
        height, width = tensor.shape[1:]
        for _ in range(background_per_image):
            for _attempt in range(20):
                side = float(rng.choice(sides)) * context
                if side >= min(height, width):
                    continue
                x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
                window = [x, y, x + side, y + side]
                if not len(corners) or _overlap(window, corners).max() < 0.1:
                    boxes.append(window)
                    crop_labels.append(len(classes) - 1)
                    break
        if boxes:
            rois = torch.tensor(boxes, dtype=torch.float32)
            crops = roi_align(tensor[None], [rois], output_size=size, spatial_scale=1.0,
                              sampling_ratio=-1, aligned=True)
            images.append(crops.round().clamp(0, 255).to(torch.uint8))
            labels += crop_labels
    if not images:
        raise ValueError(f"{json_file}: no annotations and no room for background windows; "
                         f"expected a COCO json with boxes")
    return Crops(torch.cat(images), torch.tensor(labels), classes)


# ------------------------------------------------------------------------------ timm's model

def timm_bit(cfg, num_classes: int):
    """timm's own ResNetV2 with the network the config's BiT backbone builds (MODEL.BIT depths,
    widths and stem, MODEL.NORMS.BACKBONE's GN groups, WS eps): its state dict loads through
    MODEL.WEIGHTS unchanged. The norm must be GN + WS (timm: GroupNormAct + StdConv2d)."""
    try:
        from timm.layers import GroupNormAct, StdConv2d
        from timm.models.resnetv2 import ResNetV2
    except ImportError:
        raise ImportError("the pretraining builds timm's ResNetV2: pip install timm") from None
    from ..modeling.bit import bit_widths

    b = cfg.MODEL.BIT
    widths = bit_widths(b.DEPTH, b.WIDTH_FACTOR, b.BLOCKS_PER_STAGE, b.STEM_OUT_CHANNELS,
                        b.RES2_OUT_CHANNELS)
    spec = component_spec(cfg, "BACKBONE")
    if spec.norm.type != "GN" or not spec.ws or spec.ws.style != "timm":
        style = f" in {spec.ws.style}'s style" if spec.ws and spec.ws.style != "timm" else ""
        raise ValueError(f"MODEL.NORMS.BACKBONE is {spec.describe()}{style}: the pretraining "
                         f"builds timm's BiT, GN + WS (MODEL.NORMS.WS.STYLE timm); set "
                         f"MODEL.NORMS.BACKBONE {{TYPE: GN, WS: True}}")
    if not b.FINAL_NORM:
        raise ValueError("MODEL.BIT.FINAL_NORM False: timm's ResNetV2 always has its final norm")
    groups = (dict(group_size=spec.norm.channels_per_group) if spec.norm.channels_per_group
              else dict(num_groups=spec.norm.num_groups or 32))
    return ResNetV2(layers=list(widths.blocks_per_stage), channels=widths.stage_out_channels,
                    stem_chs=widths.stem_out_channels, stem_type=b.STEM_TYPE,
                    num_classes=num_classes, in_chans=len(cfg.MODEL.PIXEL_MEAN),
                    conv_layer=partial(StdConv2d, eps=b.WS_EPS or spec.ws.effective_eps),
                    norm_layer=partial(GroupNormAct, eps=spec.norm.eps, **groups))


def normalize(images: torch.Tensor, cfg) -> torch.Tensor:
    """uint8 RGB crops -> the detector's input normalization (MODEL.PIXEL_MEAN / STD, in the
    channel order of INPUT.FORMAT), so pretraining sees what fine-tuning sees."""
    x = images.float()
    if cfg.INPUT.FORMAT == "BGR":
        x = x.flip(1)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1)
    return (x - mean) / std


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree rotations, per crop (objects under a microscope or a camera
    have no preferred orientation at this scale)."""
    out = batch.clone()
    for i in range(len(out)):
        k, flip = torch.randint(0, 4, (2,), generator=generator).tolist()
        out[i] = torch.rot90(out[i], k % 4, dims=(1, 2))
        if flip % 2:
            out[i] = out[i].flip(2)
    return out


def accuracy(model, crops: Crops, cfg, batch: int = 256) -> Dict[str, float]:
    """Overall and per-class accuracy, and their mean (balanced accuracy)."""
    model.eval()
    predictions = []
    with torch.no_grad():
        for i in range(0, len(crops.labels), batch):
            predictions.append(model(normalize(crops.images[i:i + batch], cfg)).argmax(1))
    predicted = torch.cat(predictions)
    correct = predicted == crops.labels
    per_class = {name: round(float(correct[crops.labels == k].float().mean()), 4)
                 for k, name in enumerate(crops.classes) if (crops.labels == k).any()}
    return {"accuracy": round(float(correct.float().mean()), 4),
            "balanced_accuracy": round(float(np.mean(list(per_class.values()))), 4),
            "per_class": per_class}


def pretrain(cfg, train: Crops, val: Optional[Crops], out_dir: str, epochs: int = 8,
             batch: int = 64, lr: float = 2e-3, weight_decay: float = 0.05, seed: int = 0,
             log=print) -> dict:
    """Train timm_bit(cfg) on the crops, save its state dict (timm's format, atomically) to
    out_dir/bit_pretrained.pth, check it loads into the config's backbone; the record."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = timm_bit(cfg, len(train.classes))
    counts = torch.bincount(train.labels, minlength=len(train.classes)).float()
    weights = (1.0 / counts.clamp(min=1))[train.labels]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train.labels) / batch)
    total, warmup = epochs * steps_per_epoch, steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup)
                                                  * 0.5 * (1 + math.cos(math.pi * s / total)))
    history, start, cpu0 = [], time.perf_counter(), time.process_time()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.multinomial(weights, len(train.labels), replacement=True,
                                  generator=generator)  # class-balanced
        losses, hits = [], 0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x = normalize(_augment(train.images[idx], generator), cfg)
            logits = model(x)
            loss = F.cross_entropy(logits, train.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            hits += int((logits.argmax(1) == train.labels[idx]).sum())
        row = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4),
               "train_accuracy": round(hits / len(order), 4)}
        if val is not None:
            row["val"] = accuracy(model, val, cfg)
        history.append(row)
        elapsed = time.perf_counter() - start
        eta = elapsed / epoch * (epochs - epoch)
        val_text = (f", val balanced accuracy {row['val']['balanced_accuracy']:.3f}"
                    if val is not None else "")
        log(f"pretrain epoch {epoch}/{epochs}: loss {row['loss']:.3f}, train accuracy "
            f"{row['train_accuracy']:.3f}{val_text}; {elapsed:.0f} s, ETA {eta:.0f} s")
    path = os.path.join(out_dir, WEIGHTS_FILE)
    state = model.state_dict()
    atomic_write(path, lambda f: torch.save(state, f))
    record = {"weights": path, "classes": train.classes, "train_crops": train.counts(),
              "val_crops": val.counts() if val is not None else None, "epochs": epochs,
              "batch": batch, "lr": lr, "weight_decay": weight_decay, "seed": seed,
              "parameters": sum(p.numel() for p in model.parameters()),
              "history": history, "wall_s": round(time.perf_counter() - start, 1),
              "cpu_s": round(time.process_time() - cpu0, 1),
              "loaded_max_abs_diff": check_loads(cfg, model.eval(), path, train)}
    write_json(os.path.join(out_dir, "pretrain.json"), record, indent=1)
    return record


def check_loads(cfg, model, path: str, crops: Crops) -> float:
    """Load `path` through MODEL.WEIGHTS' loader into the config's backbone; the largest
    absolute difference of its res5 from timm's forward_features on a few crops."""
    from detectron2.layers import ShapeSpec

    from ..checkpoint import AtomicCheckpointer
    from ..modeling.bit import make_bit

    backbone = make_bit(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    AtomicCheckpointer(backbone).load(path)
    x = normalize(crops.images[:8], cfg)
    with torch.no_grad():
        ours = backbone.eval()(x)[backbone.stage_names[-1]]
        theirs = model.forward_features(x)
    return float((ours - theirs).abs().max())


# ------------------------------------------------------------------------------ fine-tuning

def dataset_opts(train_json: str, val_json: str, image_root: str, num_classes: int,
                 val_image_root: str = "") -> List[str]:
    """Config opts registering the two jsons and training / testing on them."""
    return ["DATASETS.COCO_FORMAT", str([["bit_ft_train", train_json, image_root],
                                         ["bit_ft_val", val_json, val_image_root or image_root]]),
            "DATASETS.TRAIN", "('bit_ft_train',)", "DATASETS.TEST", "('bit_ft_val',)",
            "MODEL.RETINANET.NUM_CLASSES", str(num_classes),
            "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes)]


def arm_cfg(config_file: str, opts: Sequence[str], weights: str, folder: str):
    """One run's config: the same for both arms but MODEL.WEIGHTS and OUTPUT_DIR."""
    return load_cfg(config_file, [*opts, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", folder],
                    resolve_device=False)


def _per_class_ap(metrics: dict) -> Dict[str, Optional[float]]:
    """Per-class box AP (percent) from the evaluator's metrics.json."""
    return {k: None if v is None else round(100 * v, 2)
            for k, v in metrics.get("ap_per_class", {}).items()}


def finetune(config_file: str, opts: Sequence[str], weights: str, out: str, threads: int = 0,
             log=print) -> List[dict]:
    """The two runs (pretrained, scratch), one train_cell process each; their records."""
    from .runner import read_result, run_process
    from .tables import summarize_metrics
    from .train_cell import CELL_CONFIG, TRAIN_RESULT

    records, times = [], []
    for i, arm in enumerate(ARMS):
        folder = os.path.join(out, "finetune", arm)
        os.makedirs(folder, exist_ok=True)
        cfg = arm_cfg(config_file, opts, weights if arm == "pretrained" else "", folder)
        atomic_write(os.path.join(folder, CELL_CONFIG), partial(_write, cfg.dump().encode()))
        eta = f", ETA {sum(times) / len(times) * (len(ARMS) - i):.0f} s" if times else ""
        log(f"finetune {arm} ({i + 1}/{len(ARMS)}): {cfg.SOLVER.MAX_ITER} iterations x "
            f"{plural(cfg.SOLVER.IMS_PER_BATCH, 'image')}, "
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS or '(none)'}; "
            f"log {os.path.join(folder, 'process.log')}{eta}")
        command = [sys.executable, "-m", "gn_det.study.train_cell", folder]
        proc = run_process(command, os.path.join(folder, "process.log"), threads)
        times.append(proc["wall_s"])
        train = read_result(os.path.join(folder, TRAIN_RESULT)) if proc["rc"] == 0 else None
        if train is None:
            raise RuntimeError(f"finetune {arm}: the run failed (exit code {proc['rc']}); see "
                               f"{os.path.join(folder, 'process.log')}")
        metrics = read_result(train["metrics_file"]) or {}
        record = {"arm": arm, "weights": cfg.MODEL.WEIGHTS, "images_per_batch":
                  cfg.SOLVER.IMS_PER_BATCH, "max_iter": cfg.SOLVER.MAX_ITER,
                  **summarize_metrics(metrics), "per_class_AP": _per_class_ap(metrics),
                  "status": train["status"], "train_s": train["train_s"],
                  "s_per_iter": train["s_per_iter"], "wall_s": proc["wall_s"],
                  "cpu_s": proc["cpu_s"],
                  "peak_rss_mb": proc["peak_rss_mb"], "init_digest": train["init_digest"],
                  "command": " ".join(command), "folder": folder}
        log(f"finetune {arm}: AP {record.get('AP')}, AP50 {record.get('AP50')} "
            f"({record['cpu_s']:.0f} CPU s)")
        records.append(record)
    return records


def format_markdown(pretrained: Optional[dict], runs: Sequence[dict]) -> str:
    lines = ["| run | MODEL.WEIGHTS | images/batch | iterations | AP | AP50 | AP75 | "
             "per-class AP | CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        per_class = ", ".join(f"{k} {'-' if v is None else f'{v:.1f}'}"
                              for k, v in r["per_class_AP"].items())
        lines.append(f"| {r['arm']} | {r['weights'] or '(none)'} | {r['images_per_batch']} | "
                     f"{r['max_iter']} | {r.get('AP')} | {r.get('AP50')} | {r.get('AP75')} | "
                     f"{per_class} | {r['cpu_s']:.0f} |")
    if pretrained:
        last = pretrained["history"][-1]
        val = last.get("val", {}).get("balanced_accuracy")
        crops = pretrained["train_crops"]
        lines += ["", f"Pretraining: {pretrained['epochs']} epochs on {sum(crops.values())} "
                  f"train crops {crops}, final loss {last['loss']}, val "
                  f"balanced accuracy {val}, {pretrained['cpu_s']:.0f} CPU s; loaded into the "
                  f"backbone, max |ours - timm| = {pretrained['loaded_max_abs_diff']:.2e}."]
    return "\n".join(lines) + "\n"


def _write(data: bytes, f) -> None:
    f.write(data)


def num_classes(json_file: str) -> int:
    """The number of categories of a COCO json (validated as registration validates it)."""
    return len(validate_coco_file(json_file)[0].data["categories"])

