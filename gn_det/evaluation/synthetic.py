"""Random COCO-format ground truth and detection results, shaped like a real detector's output.

Used by the evaluation benchmark (tools/benchmark.py eval) and the tests: images with a handful of
objects of a few classes, some crowd regions, and a fixed number of detections per image made of
jittered copies of the objects (true positives and duplicates) plus background boxes.
"""
from typing import Dict, List, Tuple

import numpy as np


def make_coco_pair(num_images: int = 100, dets_per_image: int = 100, num_classes: int = 80,
                   gt_per_image: float = 7.0, crowd_fraction: float = 0.01, image_size: int = 640,
                   seed: int = 0) -> Tuple[Dict, List[Dict]]:
    """(ground-truth dataset dict, results list) in COCO json form; deterministic for a seed.

    Every image gets exactly `dets_per_image` detections (fewer only when it is 0). Box sizes span
    COCO's small / medium / large ranges; scores of near-copies of objects run higher than those
    of background boxes, so precision falls along the PR curve like a trained detector's.
    """
    rng = np.random.default_rng(seed)
    categories = [{"id": c + 1, "name": f"class_{c + 1:02d}"} for c in range(num_classes)]
    images = [{"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "height": image_size,
               "width": image_size} for i in range(num_images)]

    counts = rng.poisson(gt_per_image, num_images)
    img_of_gt = np.repeat(np.arange(num_images), counts)
    n_gt = int(counts.sum())
    # a few classes per image, like real scenes
    per_image_classes = rng.integers(0, num_classes, (num_images, 3))
    gt_cls = per_image_classes[img_of_gt, rng.integers(0, 3, n_gt)]
    gt_boxes = _random_boxes(rng, n_gt, image_size)
    crowd = rng.random(n_gt) < crowd_fraction
    annotations = [
        {"id": k + 1, "image_id": int(img_of_gt[k]) + 1, "category_id": int(gt_cls[k]) + 1,
         "bbox": [float(v) for v in gt_boxes[k]], "area": float(gt_boxes[k, 2] * gt_boxes[k, 3]),
         "iscrowd": int(crowd[k])}
        for k in range(n_gt)]

    # detections: ~2 jittered copies per object (one TP candidate + a duplicate), rest background
    results: List[Dict] = []
    starts = np.concatenate([[0], np.cumsum(counts)])
    for i in range(num_images):
        gts = np.arange(starts[i], starts[i + 1])
        n_copy = min(dets_per_image, 2 * len(gts))
        src = rng.choice(gts, n_copy) if len(gts) else np.zeros(0, int)
        boxes = _jitter(rng, gt_boxes[src], scale=rng.uniform(0.02, 0.3, (n_copy, 1)))
        cls = gt_cls[src].copy()
        wrong = rng.random(n_copy) < 0.1  # some copies get the wrong class
        cls[wrong] = rng.integers(0, num_classes, int(wrong.sum()))
        scores = np.clip(rng.beta(4, 2, n_copy), 0.0, 1.0)
        n_bg = dets_per_image - n_copy
        boxes = np.concatenate([boxes, _random_boxes(rng, n_bg, image_size)])
        cls = np.concatenate([cls, np.where(rng.random(n_bg) < 0.5, per_image_classes[i, 0],
                                            rng.integers(0, num_classes, n_bg))])
        scores = np.concatenate([scores, rng.beta(1, 5, n_bg)])
        scores = np.round(scores, 4)  # rounded, so score ties occur as in real result files
        for b, c, s in zip(boxes.tolist(), cls.tolist(), scores.tolist()):
            results.append({"image_id": i + 1, "category_id": c + 1, "bbox": b, "score": s})
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, results


def _random_boxes(rng, n: int, image_size: int) -> np.ndarray:
    """n XYWH boxes inside the image, sizes log-uniform over COCO's small..large range."""
    side = np.exp(rng.uniform(np.log(8), np.log(image_size * 0.6), (n, 2)))
    xy = rng.uniform(0, 1, (n, 2)) * (image_size - side)
    return np.round(np.concatenate([xy, side], axis=1), 2)


def _jitter(rng, boxes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Boxes shifted and resized by a fraction `scale` of their size."""
    wh = boxes[:, 2:]
    xy = boxes[:, :2] + rng.normal(0, 1, wh.shape) * scale * wh
    wh = wh * np.exp(rng.normal(0, 1, wh.shape) * scale)
    return np.round(np.concatenate([xy, np.maximum(wh, 1.0)], axis=1), 2)
