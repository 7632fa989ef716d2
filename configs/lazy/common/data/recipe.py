# The small-data recipe's training augmentations as a LazyConfig piece, the twin of
# configs/real/Base-RetinaNet-R18-CPU-Recipe.yaml's INPUT.CROP / COLOR_JITTER / LSJ (built by the
# same function, gn_det.data.augmentation.train_augmentations). Use it in a preset that has
# coco_format.py's dataloader and a model with pixel_mean:
#   from ..common.data.recipe import recipe_augmentations
#   dataloader.train.mapper.augmentations = recipe_augmentations
# Each piece switches off on its own, e.g. dataloader.train.mapper.augmentations.lsj.enabled=false;
# with LSJ off, min_size / max_size are the resize. The EMA of the weights is train.ema.
from gn_det.data.augmentation import train_augmentations

from detectron2.config import LazyCall as L

recipe_augmentations = L(train_augmentations)(
    min_size=[416], max_size=704, sample_style="choice", flip="horizontal",
    crop=dict(enabled=True, type="relative_range", size=[0.5, 0.5], prob=0.5),
    color=dict(enabled=True, brightness=[0.7, 1.3], contrast=[0.7, 1.3], saturation=[0.7, 1.3]),
    lsj=dict(enabled=True, image_size=[512, 512], min_scale=0.5, max_scale=2.0, pad_value=None),
    # the mapper's image format and the model's pixel mean (LSJ's padding), where it is assigned
    image_format="${..image_format}", pixel_mean="${.....model.pixel_mean}")
