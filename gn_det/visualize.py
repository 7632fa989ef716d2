"""Images of detections and ground truth, drawn with detectron2's `Visualizer`: the error viewer's
TP / FP / FN images and contact sheet (tools/show_errors.py) and the dataset browser's GT images
(tools/visualize_data.py).

Error images use the Visualizer's primitives (draw_box, draw_text) in one fixed style, as its
docstring advises for a consistent look: detections kept at the operating threshold in green (TP)
or red (FP, with its kind), GT in orange when missed (FN), dashed green under the TP that matched
it, crowd regions and the detections they absorb in grey. The browser draws dataset dicts with
`Visualizer.draw_dataset_dict`, as detectron2's tools/visualize_data.py does. Every box has a
contrasting outline (OutlinedVisualizer), so it shows on any background. Labels print scores and
IoUs with the digits it takes to show which side of the threshold they are on. Images are written
as PNGs of the image's own size, atomically.
"""
import io
import logging
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from matplotlib import colors as mpl_colors
from matplotlib import patheffects
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils
from detectron2.utils.visualizer import Visualizer

from .utils.errors import one_line
from .data.images import read_image_checked
from .evaluation.errors import FP_KINDS, ImageErrors
from .utils.file_io import atomic_write
from .utils.plotting import new_figure
from .utils.text import beside_threshold, plural

logger = logging.getLogger(__name__)

COLORS = {"tp": "#2ca02c", "fp": "#d62728", "fn": "#ff9f1c", "ignored": "#9e9e9e"}
_FP_SHORT = {"wrong_class": "cls", "duplicate": "dup", "poor_localization": "loc",
             "background": "bg"}
_PROGRESS_FROM = 10  # images; fewer are drawn without a progress bar
_OUTLINE_PX = 1.5  # each side of a box line: a light and a dark band show on any background
_MIN_BOX_ALPHA = 0.85  # detectron2 draws dataset boxes at alpha 0.5: pale colours fade into fur


class OutlinedVisualizer(Visualizer):
    """detectron2's Visualizer whose boxes have an outline on both sides of their coloured line
    (a matplotlib Stroke path effect), black for a light colour and white for a dark one, and are
    at least 85% opaque: a light and a dark band cross every box edge, so it shows on a white,
    brown or busy background alike. Everything else is the Visualizer's."""

    def draw_box(self, box_coord, alpha=0.5, edge_color="g", line_style="-"):
        output = super().draw_box(box_coord, alpha=max(alpha, _MIN_BOX_ALPHA),
                                  edge_color=edge_color, line_style=line_style)
        box = output.ax.patches[-1]
        r, g, b = mpl_colors.to_rgb(edge_color)
        outline = "black" if 0.299 * r + 0.587 * g + 0.114 * b >= 0.45 else "white"
        box.set_path_effects([patheffects.Stroke(linewidth=box.get_linewidth() + 2 * _OUTLINE_PX,
                                                 foreground=outline, alpha=1.0),
                              patheffects.Normal()])
        return output


def write_png(path: str, image: np.ndarray) -> str:
    """An RGB uint8 array as a PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def progress(items: Iterable, total: int, desc: str) -> Iterable:
    """`items`, with a tqdm progress bar (rate and ETA) on stderr when there are many."""
    if total < _PROGRESS_FROM:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="img", mininterval=1.0)


def _font_size(image: np.ndarray) -> float:
    """Label size: detectron2's default for the image size, a little smaller (dense scenes)."""
    h, w = image.shape[:2]
    return 0.75 * max(math.sqrt(h * w) // 90, 10)


def header_height(image: np.ndarray) -> int:
    """Pixels of the band above an error image that holds its header line."""
    return int(round(_font_size(image) * 100 / 72 * 1.9))  # points at the Visualizer's 100 dpi


def draw_image_errors(image: np.ndarray, errors: ImageErrors, class_names: Sequence[str],
                      iou: float = 0.5, score: float = 0.5) -> np.ndarray:
    """The image (RGB) with its GT and kept detections coloured by outcome, under a header band
    with the counts and the colour key; returns an RGB array of the image's width and its
    height + header_height(image). `iou` and `score` are the thresholds `errors` were found at:
    labels show scores and IoUs with the digits it takes to tell which side of them they are."""
    band = header_height(image)
    padded = np.concatenate([np.full((band,) + image.shape[1:], 24, np.uint8),
                             np.asarray(image, np.uint8)], axis=0)
    v = OutlinedVisualizer(padded, metadata=None, scale=1.0)
    size = _font_size(image)

    def corners(bbox: Sequence[float]):
        x, y, w, h = bbox
        return x, y + band, x + w, y + band + h

    for g in errors.gt:
        box = corners(g["bbox"])
        if g["status"] == "tp":
            v.draw_box(box, alpha=0.8, edge_color=COLORS["tp"], line_style="--")
        elif g["status"] == "crowd":
            v.draw_box(box, alpha=0.8, edge_color=COLORS["ignored"], line_style="--")
            v.draw_text("crowd", (box[0], box[1]), color=COLORS["ignored"], font_size=size,
                        horizontal_alignment="left")
        else:
            v.draw_box(box, alpha=0.95, edge_color=COLORS["fn"])
            text = f"FN {class_names[g['label']]}"
            if g["confused_with"] is not None:
                text += f" (as {class_names[g['confused_with']]})"
            v.draw_text(text, (box[0], box[3]), color=COLORS["fn"], font_size=size,
                        horizontal_alignment="left")
    for d in sorted(errors.dets, key=lambda d: d["score"]):  # best on top
        box = corners(d["bbox"])
        name, shown = class_names[d["label"]], beside_threshold(d["score"], score)
        if d["kind"] == "tp":
            color, text = COLORS["tp"], f"{name} {shown}"
        elif d["kind"] == "ignored":
            color, text = COLORS["ignored"], None
        else:
            color, text = COLORS["fp"], f"FP {_FP_SHORT[d['kind']]} {name} {shown}"
            if d["kind"] == "wrong_class":
                text += f" (GT {class_names[d['gt_label']]})"
            elif d["kind"] == "poor_localization":
                text += f" IoU {beside_threshold(d['iou'], iou)}"
        v.draw_box(box, alpha=0.95, edge_color=color)
        if text:
            v.draw_text(text, (box[0], box[1]), color=color, font_size=size,
                        horizontal_alignment="left")
    c = errors.counts
    kinds = ", ".join(f"{c['fp_' + k]} {_FP_SHORT[k]}" for k in FP_KINDS if c["fp_" + k])
    header = (f"{errors.file_name}: TP {c['tp']}  FP {c['fp']}" + (f" ({kinds})" if kinds else "")
              + f"  FN {c['fn']}   [green TP, red FP, orange FN, grey crowd]")
    v.draw_text(header, (3, band * 0.2), color="white", font_size=size,
                horizontal_alignment="left")
    return v.get_output().get_image()


def contact_sheet(images: Sequence[np.ndarray], titles: Sequence[str], path: str,
                  heading: str, columns: Optional[int] = None) -> str:
    """A grid of `images` (RGB arrays) with a title each, as one PNG (written atomically)."""
    n = max(len(images), 1)
    cols = columns or min(4, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    aspect = (images[0].shape[0] / images[0].shape[1]) if len(images) else 0.75
    tile = 4.5
    fig = new_figure(figsize=(tile * cols, (tile * aspect + 0.45) * rows + 0.6), dpi=110,
                     layout="constrained")
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            ax.set_title(titles[i], fontsize=8)
    if not len(images):
        fig.axes[0].text(0.5, 0.5, "no image has an error", ha="center", va="center")
    fig.suptitle(heading, fontsize=11)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path


def write_error_images(errors: Sequence[ImageErrors], image_root: str, out_dir: str,
                       class_names: Sequence[str], source: str, iou: float = 0.5,
                       score: float = 0.5) -> List[str]:
    """One PNG per image of `errors` (ranked: "NNN_<stem>.png") and contact_sheet.png in
    `out_dir`; `source` names the ground truth in read errors; `iou` and `score` are the
    thresholds `errors` were found at. Returns the paths."""
    missing = [e.file_name for e in errors
               if not os.path.isfile(os.path.join(image_root, e.file_name))]
    if missing:
        raise FileNotFoundError(f"{source}: {len(missing)} of the {plural(len(errors), 'image')} "
                                f"to draw are not under {image_root}, e.g. {missing[0]!r}; "
                                "expected --image-root to be the folder the 'file_name' fields "
                                "are relative to")
    os.makedirs(out_dir, exist_ok=True)
    paths, drawn, titles = [], [], []
    for rank, e in enumerate(progress(errors, len(errors), "drawing error images")):
        image = read_image_checked(os.path.join(image_root, e.file_name), source, format="RGB")
        out = draw_image_errors(image, e, class_names, iou, score)
        stem = os.path.splitext(os.path.basename(e.file_name))[0] or str(e.image_id)
        paths.append(write_png(os.path.join(out_dir, f"{rank + 1:03d}_{stem}.png"), out))
        drawn.append(out)
        c = e.counts
        titles.append(f"#{rank + 1} {os.path.basename(e.file_name)}: FP {c['fp']}, FN {c['fn']}")
    heading = (f"{plural(len(errors), 'image')} with most errors (FP + FN); green TP, red FP "
               "(cls = wrong class, dup = duplicate, loc = poor localization, bg = background), "
               "orange FN")
    paths.append(contact_sheet(drawn, titles, os.path.join(out_dir, "contact_sheet.png"),
                               heading))
    return paths


# ------------------------------------------------------------------------------ dataset browser

def dataset_names_hint(cfg) -> str:
    names = [entry[0] for entry in cfg.DATASETS.COCO_FORMAT]
    listed = ", ".join(names) if names else "none"
    return (f"the config's DATASETS.COCO_FORMAT names: {listed}; a detectron2 builtin "
            "(e.g. coco_2017_val) works when its files are under $DETECTRON2_DATASETS")


def browse_dataset(cfg, name: str, out_dir: str, num: int = 20,
                   source: str = "annotation") -> List[str]:
    """PNGs of the first `num` images of dataset `name` (0: all) with their GT boxes and class
    names: as annotated ("annotation"), or as the training data loader feeds them, augmented
    and resized ("dataloader"). The dataset must be registered (register_datasets_from_cfg)."""
    if name not in DatasetCatalog.list():
        raise KeyError(f"--dataset {name!r} is not registered; {dataset_names_hint(cfg)}")
    if source not in ("annotation", "dataloader"):
        raise ValueError(f"--source {source!r}: expected 'annotation' or 'dataloader'")
    try:
        dicts = DatasetCatalog.get(name)
    except Exception as e:  # noqa: BLE001  a builtin without its files, a broken loader
        raise ValueError(f"dataset {name!r} could not be loaded ({one_line(e, brief=True)}); "
                         f"{dataset_names_hint(cfg)}") from e
    metadata = MetadataCatalog.get(name)
    total = len(dicts) if num <= 0 else min(num, len(dicts))
    os.makedirs(out_dir, exist_ok=True)
    if source == "annotation":
        samples = ((d, read_image_checked(d["file_name"], name, format="RGB"))
                   for d in dicts[:total])
    else:
        samples = _loader_samples(cfg, name, total)
    paths, seen = [], set()
    for d, image in progress(samples, total, f"drawing {name}"):
        v = OutlinedVisualizer(image, metadata=metadata, scale=1.0)
        if source == "annotation":
            out = v.draw_dataset_dict(d).get_image()
        else:
            out = _draw_instances(v, d["instances"], metadata).get_image()
        stem = os.path.splitext(os.path.basename(str(d.get("file_name", ""))))[0]
        stem = stem if stem and stem not in seen else f"{len(paths):04d}_{d.get('image_id', '')}"
        seen.add(stem)
        paths.append(write_png(os.path.join(out_dir, f"{stem}.png"), out))
    logger.info("wrote %s of %s (%s) to %s", plural(len(paths), "image"), name, source, out_dir)
    return paths


def _loader_samples(cfg, name: str, total: int):
    """(dataset dict, RGB image) pairs as the trainer's data loader yields them for `name`."""
    from .engine import Trainer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TRAIN = (name,)
    count = 0
    for batch in Trainer.build_train_loader(cfg):
        for d in batch:
            image = detection_utils.convert_image_to_rgb(d["image"].permute(1, 2, 0),
                                                         cfg.INPUT.FORMAT)
            yield d, image
            count += 1
            if count >= total:
                return


def _draw_instances(v: OutlinedVisualizer, instances, metadata: Dict):
    """GT boxes (and masks) of a data-loader Instances with class names."""
    fields = instances.get_fields()
    names = metadata.get("thing_classes", None)
    labels = [names[i] if names else str(i) for i in fields["gt_classes"].tolist()]
    return v.overlay_instances(labels=labels, boxes=fields.get("gt_boxes"),
                               masks=fields.get("gt_masks"))
