"""The toy shapes dataset: seeded synthetic images of circles, squares, triangles and stars on
cluttered backgrounds, with COCO boxes and polygons (the make_shapes command,
gn_det.commands.make_shapes, documents the options)."""
import argparse
import math
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw

from ..utils.file_io import write_json
from ..utils.progress import Progress

# Unit outlines (radius 1, centred on 0) as (angle, radius) pairs; a shape is this outline scaled,
# rotated and moved. Circles are polygons too, so the drawn shape and its mask agree exactly.
_STAR_POINTS = 5


def _regular(n: int, phase: float = 0.0) -> List[Tuple[float, float]]:
    return [(phase + 2 * math.pi * k / n, 1.0) for k in range(n)]


SHAPES: Dict[str, List[Tuple[float, float]]] = {
    "circle": _regular(64),
    "square": _regular(4, math.pi / 4),
    "triangle": _regular(3, -math.pi / 2),
    "star": [(-math.pi / 2 + math.pi * k / _STAR_POINTS, 1.0 if k % 2 == 0 else 0.45)
             for k in range(2 * _STAR_POINTS)],
    "hexagon": _regular(6),
    "cross": [(math.atan2(y, x), math.hypot(x, y)) for x, y in
              [(0.33, 1), (0.33, 0.33), (1, 0.33), (1, -0.33), (0.33, -0.33), (0.33, -1),
               (-0.33, -1), (-0.33, -0.33), (-1, -0.33), (-1, 0.33), (-0.33, 0.33), (-0.33, 1)]],
}
DEFAULT_CLASSES = ("circle", "square", "triangle", "star")
SPLITS = ("train", "val")
_PLACEMENT_TRIES = 30


class ShapesError(ValueError):
    """A bad option or an unsafe output path; the message is one line."""


# ------------------------------------------------------------------------------ drawing

def _outline(shape: str, cx: float, cy: float, radius: float, angle: float) -> List[tuple]:
    return [(cx + radius * r * math.cos(a + angle), cy + radius * r * math.sin(a + angle))
            for a, r in SHAPES[shape]]


def _random_color(rng: np.random.Generator, saturated: bool) -> Tuple[int, int, int]:
    """A vivid colour for objects, a muted one for background and clutter (HSV → RGB)."""
    hue = rng.uniform(0, 180)
    sat = rng.uniform(150, 255) if saturated else rng.uniform(0, 90)
    val = rng.uniform(150, 255) if saturated else rng.uniform(60, 200)
    hsv = np.array([[[hue, sat, val]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear gradient between two muted colours, in a random direction (H×W×3 uint8)."""
    c0, c1 = (np.array(_random_color(rng, saturated=False), np.float32) for _ in range(2))
    theta = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    t = ramp[None, :] * math.cos(theta) + ramp[:, None] * math.sin(theta)
    t -= t.min()
    t *= 1.0 / max(float(t.max()), 1e-6)
    return cv2.merge([(c0[k] + (c1[k] - c0[k]) * t).astype(np.uint8) for k in range(3)])


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, count: int,
                  max_blob: float):
    """Distractors under the objects: straight lines across the image and small blobs."""
    for _ in range(count):
        color = _random_color(rng, saturated=rng.random() < 0.3)
        if rng.random() < 0.5:
            x0, y0, x1, y1 = rng.uniform(0, size, 4)
            draw.line([(x0, y0), (x1, y1)], fill=color, width=int(rng.integers(1, 4)))
        else:
            r = rng.uniform(1.5, max(2.0, max_blob))
            cx, cy = rng.uniform(0, size, 2)
            draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r], fill=color)


def _polygon_mask(points: List[tuple], size: int) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(points, fill=1)
    return np.asarray(mask, dtype=bool)


def _mask_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons (pixel-centre coordinates) of a mask's outer contours."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1) + 0.5).tolist() for c in contours if len(c) >= 3]


def _mask_box(mask: np.ndarray) -> List[float]:
    """The tight [x, y, w, h] box around a mask's pixels (pixel edges, COCO convention)."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return [float(x), float(y), float(w), float(h)]


def render_image(rng: np.random.Generator, opts: argparse.Namespace) -> Tuple[np.ndarray, list]:
    """One image (H×W×3 uint8) and its objects as (class index, visible mask) pairs."""
    size = opts.size
    canvas = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(canvas)
    min_r, max_r = opts.min_size * size / 2, opts.max_size * size / 2
    _draw_clutter(draw, rng, size, int(rng.integers(0, opts.clutter + 1)), max_blob=min_r * 0.4)

    objects: List[dict] = []  # {"cls", "full": area, "visible": mask}
    for _ in range(int(rng.integers(opts.min_objects, opts.max_objects + 1))):
        cls = int(rng.integers(len(opts.classes)))
        for _try in range(_PLACEMENT_TRIES):
            radius = rng.uniform(min_r, max_r)
            angle = rng.uniform(0, 2 * math.pi)
            cx, cy = rng.uniform(radius, size - radius, 2)
            points = _outline(opts.classes[cls], cx, cy, radius, angle)
            mask = _polygon_mask(points, size)
            if mask.sum() < 16:
                continue
            remaining = [o["visible"] & ~mask for o in objects]
            if all(r.sum() >= (1 - opts.max_occlusion) * o["full"]
                   for r, o in zip(remaining, objects)):
                break
        else:
            continue  # no placement keeps the others visible enough: skip this object
        for o, r in zip(objects, remaining):
            o["visible"] = r
        objects.append({"cls": cls, "full": int(mask.sum()), "visible": mask})
        draw.polygon(points, fill=_random_color(rng, saturated=True))

    image = np.asarray(canvas)
    if opts.noise > 0:
        noise = rng.standard_normal(image.shape, dtype=np.float32) * opts.noise
        image = cv2.add(image, noise, dtype=cv2.CV_8U)  # saturating uint8 add
    return image, [(o["cls"], o["visible"]) for o in objects]


# ------------------------------------------------------------------------------ output

def safe_path(root: Path, relative: str) -> Path:
    """`root/relative`, refused when it resolves outside root (`..`, absolute, symlinks)."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ShapesError(f"refusing to write {relative!r}: it resolves to {target}, outside the "
                          f"output folder {root}; expected a path inside --out")
    return target


def generate_split(split: str, count: int, out: Path, opts: argparse.Namespace,
                   progress) -> dict:
    """Render and save one split's images; returns its COCO dict (not yet written)."""
    split_index = SPLITS.index(split)
    image_dir = safe_path(out, split)
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([opts.seed, split_index, i])
        pixels, objects = render_image(rng, opts)
        file_name = f"{split}_{i:06d}.{opts.format}"
        path = safe_path(out, f"{split}/{file_name}")
        params = {"quality": 90} if opts.format == "jpg" else {}
        Image.fromarray(pixels).save(path, **params)
        images.append({"id": i + 1, "file_name": file_name, "width": opts.size,
                       "height": opts.size})
        for cls, mask in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                "bbox": _mask_box(mask), "area": float(mask.sum()),
                "segmentation": _mask_polygons(mask), "iscrowd": 0})
        progress.update(1)
    return {
        "info": {"description": "gn_det toy shapes", "split": split,
                 "generator": "datasets/make_shapes.py", "options": _describe_options(opts)},
        "licenses": [],
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"}
                       for k, name in enumerate(opts.classes)],
        "images": images,
        "annotations": annotations,
    }


def _describe_options(opts: argparse.Namespace) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(vars(opts).items())
            if k not in ("out", "quiet")}


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def generate(opts: argparse.Namespace) -> Dict[str, Path]:
    """Write the whole dataset under opts.out; returns {split: annotation json path}."""
    out = Path(opts.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ShapesError(f"--out {opts.out}: is a file; expected a folder (created if absent)")
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": opts.train, "val": opts.val}
    written = {}
    with Progress(sum(counts.values()), "shapes", "img", log=_to_stderr,
                  quiet=opts.quiet) as progress:
        for split in SPLITS:
            if counts[split] == 0:
                continue
            data = generate_split(split, counts[split], out, opts, progress)
            ann_dir = safe_path(out, "annotations")
            ann_dir.mkdir(exist_ok=True)
            written[split] = safe_path(out, f"annotations/{split}.json")
            write_json(str(written[split]), data, separators=(",", ":"))
    return written
