"""The sample images an export is traced and checked on, and the steps detectron2 leaves outside
the exported graph: resizing to the test size before it (prepare_image) and scaling the boxes back
to the original image after it (postprocess)."""
import dataclasses
import os
from typing import List, Sequence

import numpy as np
import torch
from PIL import UnidentifiedImageError

from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from ..utils.errors import one_line
from .detections import Detections
from .formats import ExportError
from .settings import settings


@dataclasses.dataclass
class Sample:
    """One image as the exported graph takes it, and its original size."""

    name: str
    image: torch.Tensor  # (3, H, W) float32, 0-255, INPUT.FORMAT order, resized to the test size
    height: int          # original image size, for postprocess()
    width: int


def prepare_image(cfg, image: np.ndarray, name: str = "image") -> Sample:
    """Outside the graph, before it: resize an HWC image (INPUT.FORMAT order) to the test size as
    detectron2's DefaultPredictor does, as a CHW float32 tensor."""
    height, width = image.shape[:2]
    conf = settings(cfg)
    resize = T.ResizeShortestEdge([conf.min_size_test] * 2, conf.max_size_test)
    resized = resize.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
    return Sample(name, tensor, height, width)


def read_sample_images(cfg, paths: Sequence[str]) -> List[Sample]:
    """Samples from image files; a missing or unreadable file ends in one line naming it."""
    samples, input_format = [], settings(cfg).input_format
    for path in paths:
        if not os.path.isfile(path):
            raise ExportError(f"--sample-image {path}: no such file")
        try:
            image = read_image(path, format=input_format)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise ExportError(f"--sample-image {path}: not an image PIL can read "
                              f"({one_line(e, brief=True)})") from None
        samples.append(prepare_image(cfg, image, os.path.basename(path)))
    return samples


def dataset_samples(cfg, name: str, count: int) -> List[Sample]:
    """The first `count` images of a registered dataset (as detectron2's export_model takes the
    first batch of DATASETS.TEST[0])."""
    if name not in DatasetCatalog.list():
        raise ExportError(f"--sample-dataset {name}: not a registered dataset; register it with "
                          f"DATASETS.COCO_FORMAT, or pass --sample-image PATH")
    records = DatasetCatalog.get(name)[:count]
    if not records:
        raise ExportError(f"--sample-dataset {name}: has no images")
    return read_sample_images(cfg, [r["file_name"] for r in records])


def postprocess(detections: Detections, sample: Sample) -> Detections:
    """Outside the graph, after it: detectron2's detector_postprocess, from the input size back
    to the sample's original size."""
    inst = Instances(tuple(sample.image.shape[1:]))
    inst.pred_boxes = Boxes(torch.as_tensor(detections.boxes))
    inst.scores = torch.as_tensor(detections.scores)
    inst.pred_classes = torch.as_tensor(detections.classes)
    return Detections.of(detector_postprocess(inst, sample.height, sample.width))


def eager_detections(model: torch.nn.Module, sample: Sample) -> Detections:
    """The eager model's detections at the input (test) size, as the graph returns them."""
    with torch.no_grad():
        return Detections.of(model([{"image": sample.image}])[0]["instances"])
