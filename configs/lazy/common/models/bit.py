# BiT-50x1 (timm's resnetv2_50x1_bit: pre-activation ResNet-50, GN + WS) as the bottom-up network
# of a model in this folder, with BiT's input: RGB in [-1, 1] (timm's mean 0.5 / std 0.5).
from gn_det.modeling.bit import make_bit

from detectron2.config import LazyCall as L


def use_bit(model, dataloader, out_features):
    """Put BiT-50x1 (GN + WS, stem and res2 frozen) under `model.backbone` and switch the model
    and both loaders to BiT's input."""
    model.backbone.bottom_up = L(make_bit)(depth=50, width_factor=1, norm="GN", ws=True,
                                           out_features=out_features, freeze_at=2)
    model.pixel_mean = [127.5, 127.5, 127.5]
    model.pixel_std = [127.5, 127.5, 127.5]
    model.input_format = "RGB"
    dataloader.train.mapper.image_format = "RGB"
    dataloader.test.mapper.image_format = "RGB"
