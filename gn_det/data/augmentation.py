"""The training augmentations of the small-data recipe, built in one place: from a YAML config
(build_train_augmentations: INPUT.LSJ, INPUT.COLOR_JITTER and detectron2's INPUT.CROP with
INPUT.CROP.PROB) and from a LazyConfig (train_augmentations: the same list from keyword arguments,
as `dataloader.train.mapper.augmentations`). Each piece switches on and off on its own; with all
of them off the list is detectron2's (DatasetMapper.from_config's), so training is unchanged.

Order: random crop (on the decoded image, where DatasetMapper puts INPUT.CROP), colour jitter
(brightness, contrast, saturation), the resize (large-scale jitter: ResizeScale into the
IMAGE_SIZE box at a random scale, then FixedSizeCrop to IMAGE_SIZE, a random window of a larger
image or a smaller one padded right and bottom; or detectron2's ResizeShortestEdge), the flip.

Boxes stay valid through DatasetMapper: transform_instance_annotations clips every box to the
augmented image and filter_empty_instances drops those left empty (cut off by a crop); a box keeps
its class. All transforms are detectron2's; only the saturation of BGR images is added (detectron2's
RandomSaturation weighs the channels as RGB).
"""
from typing import Callable, List, Mapping, Optional, Sequence

import numpy as np

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

# RetinaNet's FPN (P3-P7) pads each batch to a multiple of 128 (its backbone's size_divisibility):
# an LSJ image size that is a multiple of it costs no padding in the model.
RETINANET_SIZE_DIVISIBILITY = 128
CROP_TYPES = ("relative_range", "relative", "absolute", "absolute_range")
_COLOR_FORMATS = {"BGR": (0.114, 0.587, 0.299), "RGB": (0.299, 0.587, 0.114)}


class RandomSaturationBGR(T.RandomSaturation):
    """detectron2's RandomSaturation for images in INPUT.FORMAT's channel order: the grey it
    blends towards weighs the channels as ITU-R 601 does (0.299 R, 0.587 G, 0.114 B) in BGR
    images too (detectron2's assumes RGB)."""

    def __init__(self, intensity_min: float, intensity_max: float, image_format: str = "BGR"):
        super().__init__(intensity_min, intensity_max)
        self.image_format = image_format

    def get_transform(self, image):
        w = np.random.uniform(self.intensity_min, self.intensity_max)
        grayscale = image.dot(_COLOR_FORMATS[self.image_format])[:, :, np.newaxis]
        return T.BlendTransform(src_image=grayscale, src_weight=1 - w, dst_weight=w)


def train_augmentations(*, min_size: Sequence[int], max_size: int, sample_style: str = "choice",
                        flip: str = "horizontal", crop: Optional[Mapping] = None,
                        color: Optional[Mapping] = None, lsj: Optional[Mapping] = None,
                        image_format: str = "BGR", pixel_mean: Optional[Sequence[float]] = None,
                        key: Optional[Callable[[str, str], str]] = None) -> List[T.Augmentation]:
    """The training augmentation list (module docstring). `min_size`, `max_size`,
    `sample_style`, `flip`: detectron2's resize and flip (INPUT.MIN_SIZE_TRAIN, ...; the resize
    is replaced by LSJ when it is on). Each piece is a dict or None (off):
    `crop` = dict(enabled, type, size, prob), detectron2's RandomCrop applied with probability prob;
    `color` = dict(enabled, brightness, contrast, saturation), each an intensity range [lo, hi]
    (1 = unchanged; [1, 1] leaves that one out);
    `lsj` = dict(enabled, image_size=[height, width], min_scale, max_scale, pad_value), pad_value
    None = the mean of `pixel_mean` (the model's padding after normalization), or 128.
    `key(piece, field)` names a setting in error messages (default: the LazyConfig's names)."""
    key = key or (lambda piece, field: f"{piece}.{field}")
    augs: List[T.Augmentation] = []
    if _on(crop):
        augs.append(_crop(crop, key))
    if _on(color):
        augs.extend(_color(color, image_format, key))
    if _on(lsj):
        augs.extend(_lsj(lsj, pixel_mean, key))
    else:
        augs.append(T.ResizeShortestEdge(min_size, max_size, sample_style))
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    return augs


def _on(piece: Optional[Mapping]) -> bool:
    return piece is not None and bool(piece.get("enabled", True))


def _crop(crop: Mapping, key) -> T.Augmentation:
    kind, size, prob = crop["type"], list(crop["size"]), float(crop.get("prob", 1.0))
    if kind not in CROP_TYPES:
        raise ValueError(f"{key('crop', 'type')}: unknown crop type {kind!r}; expected one of "
                         f"{', '.join(CROP_TYPES)}")
    if len(size) != 2 or (kind.startswith("relative") and not all(0 < s <= 1 for s in size)):
        raise ValueError(f"{key('crop', 'size')}: {size} is not a crop size for {kind!r}; "
                         "expected two fractions in (0, 1] for the relative types, two pixel "
                         "sizes for the absolute ones")
    if not 0 < prob <= 1:
        raise ValueError(f"{key('crop', 'prob')}: {prob} is not a probability in (0, 1]")
    random_crop = T.RandomCrop(kind, size)
    return random_crop if prob == 1 else T.RandomApply(random_crop, prob)


def _intensity(color: Mapping, name: str, key) -> Optional[tuple]:
    """The (lo, hi) range of one colour piece, or None when it changes nothing ([1, 1])."""
    value = list(color.get(name, (1.0, 1.0)))
    if len(value) != 2 or not 0 <= value[0] <= value[1]:
        raise ValueError(f"{key('color', name)}: {value} is not an intensity range; expected "
                         "[lo, hi] with 0 <= lo <= hi (1 = unchanged), e.g. [0.8, 1.2]")
    return None if value == [1.0, 1.0] else (float(value[0]), float(value[1]))


def _color(color: Mapping, image_format: str, key) -> List[T.Augmentation]:
    augs = []
    brightness, contrast, saturation = (_intensity(color, n, key)
                                        for n in ("brightness", "contrast", "saturation"))
    if brightness:
        augs.append(T.RandomBrightness(*brightness))
    if contrast:
        augs.append(T.RandomContrast(*contrast))
    if saturation:
        if image_format not in _COLOR_FORMATS:
            raise ValueError(f"{key('color', 'saturation')}: INPUT.FORMAT {image_format!r} has "
                             "no colour to saturate; expected BGR or RGB images, or [1.0, 1.0]")
        augs.append(RandomSaturationBGR(*saturation, image_format=image_format)
                    if image_format == "BGR" else T.RandomSaturation(*saturation))
    return augs


def _lsj(lsj: Mapping, pixel_mean, key) -> List[T.Augmentation]:
    size = [int(s) for s in lsj["image_size"]]
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{key('lsj', 'image_size')}: {list(lsj['image_size'])} is not an image "
                         f"size; expected [height, width] in pixels, e.g. [512, 512] (multiples "
                         f"of {RETINANET_SIZE_DIVISIBILITY} cost RetinaNet no padding)")
    low, high = float(lsj["min_scale"]), float(lsj["max_scale"])
    if not 0 < low <= high:
        raise ValueError(f"{key('lsj', 'min_scale')} / {key('lsj', 'max_scale')}: {low} / {high} "
                         "is not a scale range; expected 0 < min_scale <= max_scale, e.g. 0.5 / 2")
    pad = lsj.get("pad_value", None)
    if pad is None or pad < 0:
        pad = float(np.mean(pixel_mean)) if pixel_mean is not None else 128.0
    return [T.ResizeScale(low, high, size[0], size[1]),
            T.FixedSizeCrop(tuple(size), pad=True, pad_value=float(pad))]


def _yaml_key(piece: str, field: str) -> str:
    node = {"crop": "CROP", "color": "COLOR_JITTER", "lsj": "LSJ"}[piece]
    return f"INPUT.{node}.{field.upper()}"


def build_train_augmentations(cfg) -> List[T.Augmentation]:
    """train_augmentations from a YAML config: INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN /
    MIN_SIZE_TRAIN_SAMPLING / RANDOM_FLIP, INPUT.CROP, INPUT.COLOR_JITTER, INPUT.LSJ (its
    PAD_VALUE < 0 = the mean of MODEL.PIXEL_MEAN), INPUT.FORMAT."""
    i = cfg.INPUT
    crop = dict(enabled=i.CROP.ENABLED, type=i.CROP.TYPE, size=i.CROP.SIZE,
                prob=i.CROP.get("PROB", 1.0))
    color = dict(enabled=i.COLOR_JITTER.ENABLED, brightness=i.COLOR_JITTER.BRIGHTNESS,
                 contrast=i.COLOR_JITTER.CONTRAST, saturation=i.COLOR_JITTER.SATURATION)
    lsj = dict(enabled=i.LSJ.ENABLED, image_size=i.LSJ.IMAGE_SIZE, min_scale=i.LSJ.MIN_SCALE,
               max_scale=i.LSJ.MAX_SCALE, pad_value=i.LSJ.PAD_VALUE)
    return train_augmentations(min_size=i.MIN_SIZE_TRAIN, max_size=i.MAX_SIZE_TRAIN,
                               sample_style=i.MIN_SIZE_TRAIN_SAMPLING, flip=i.RANDOM_FLIP,
                               crop=crop, color=color, lsj=lsj, image_format=i.FORMAT,
                               pixel_mean=cfg.MODEL.PIXEL_MEAN, key=_yaml_key)


def build_train_mapper(cfg) -> DatasetMapper:
    """detectron2's training DatasetMapper with build_train_augmentations(cfg); masks' boxes are
    recomputed from the cropped masks whenever a piece crops (as detectron2 does for INPUT.CROP)."""
    crops = cfg.INPUT.CROP.ENABLED or cfg.INPUT.LSJ.ENABLED
    return DatasetMapper(cfg, is_train=True, augmentations=build_train_augmentations(cfg),
                         recompute_boxes=bool(cfg.MODEL.MASK_ON and crops))
