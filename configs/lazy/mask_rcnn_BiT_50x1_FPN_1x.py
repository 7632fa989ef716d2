# Mask R-CNN on BiT-50x1-FPN (timm's resnetv2_50x1_bit: pre-activation ResNet-50, GN + WS), GN +
# WS in backbone, FPN, box head and mask head, BiT's RGB input in [-1, 1]: the LazyConfig twin of
# configs/BiT/mask_rcnn_BiT_50x1_FPN_1x.yaml. train.init_checkpoint is timm's state dict as timm
# saves it (.pth / .bin / .safetensors); README "BiT backbones" says how to get it.
from .common.models.bit import use_bit
from .mask_rcnn_R_50_FPN_1x_gnws import (dataloader, datasets, lr_multiplier, model,  # noqa: F401
                                         optimizer, train)

use_bit(model, dataloader, out_features=["res2", "res3", "res4", "res5"])
train.init_checkpoint = "weights/resnetv2_50x1_bit.goog_in21k.pth"
