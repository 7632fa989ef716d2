# Mask R-CNN R50-FPN 1x on COCO with GN in backbone, FPN, 4conv1fc box head and mask head, from
# FAIR's GN ImageNet weights: the LazyConfig twin of configs/RCNN/mask_rcnn_R_50_FPN_1x_gn.yaml.
from .common.data.coco_format import dataloader, datasets  # noqa: F401
from .common.models.mask_rcnn_fpn import model
from .common.optim import SGD as optimizer
from .common.train import train

from detectron2.model_zoo import get_config

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x

model.backbone.bottom_up.norm = "GN"
model.backbone.norm = "GN"
model.roi_heads.box_head.norm = "GN"
model.roi_heads.mask_head.norm = "GN"
model.backbone.bottom_up.stride_in_1x1 = False  # FAIR's Caffe2 ResNets: stride in the 3x3 conv
dataloader.train.mapper.use_instance_mask = True
train.init_checkpoint = "catalog://ImageNetPretrained/FAIR/R-50-GN"
