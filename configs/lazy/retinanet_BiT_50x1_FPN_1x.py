# RetinaNet on BiT-50x1-FPN (timm's resnetv2_50x1_bit: pre-activation ResNet-50, GN + WS), GN + WS
# in backbone, FPN and head, BiT's RGB input in [-1, 1]: the LazyConfig twin of
# configs/BiT/retinanet_BiT_50x1_FPN_1x.yaml. train.init_checkpoint is timm's state dict as timm
# saves it (.pth / .bin / .safetensors); README "BiT backbones" says how to get it. Other widths
# and depths: model.backbone.bottom_up.depth=101 model.backbone.bottom_up.width_factor=3.
from .common.models.bit import use_bit
from .retinanet_R_50_FPN_1x_gnws_all import (dataloader, datasets, lr_multiplier,  # noqa: F401
                                             model, optimizer, train)

use_bit(model, dataloader, out_features=["res3", "res4", "res5"])
train.init_checkpoint = "weights/resnetv2_50x1_bit.goog_in21k.pth"
