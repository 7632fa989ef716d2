# Mask R-CNN on BiT-50x1-FPN (timm's resnetv2_50x1_bit: pre-activation ResNet-50, GN + WS), GN +
# WS in backbone, FPN, box head and mask head, BiT's RGB input in [-1, 1]: the LazyConfig twin of
# configs/BiT/mask_rcnn_BiT_50x1_FPN_1x.yaml. train.init_checkpoint is timm's state dict as timm
# saves it (.pth / .bin / .safetensors); README "BiT backbones" says how to get it.
from gn_det.modeling.bit import make_bit

from detectron2.config import LazyCall as L

from .mask_rcnn_R_50_FPN_1x_gnws import (dataloader, datasets, lr_multiplier, model,  # noqa: F401
                                         optimizer, train)

model.backbone.bottom_up = L(make_bit)(depth=50, width_factor=1, norm="GN", ws=True,
                                       out_features=["res2", "res3", "res4", "res5"], freeze_at=2)
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [127.5, 127.5, 127.5]
model.input_format = "RGB"
dataloader.train.mapper.image_format = "RGB"
dataloader.test.mapper.image_format = "RGB"
train.init_checkpoint = "weights/resnetv2_50x1_bit.goog_in21k.pth"
