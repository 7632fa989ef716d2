# RetinaNet R50-FPN 1x on COCO with GN in backbone, FPN and head, from FAIR's GN ImageNet weights:
# the LazyConfig twin of configs/RetinaNet/retinanet_R_50_FPN_1x_gn_all.yaml.
from .common.data.coco_format import dataloader, datasets  # noqa: F401
from .common.models.retinanet import model
from .common.optim import SGD as optimizer
from .common.train import train

from detectron2.model_zoo import get_config

lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x

model.backbone.bottom_up.norm = "GN"
model.backbone.norm = "GN"
model.head.norm = "GN"
model.backbone.bottom_up.stride_in_1x1 = False  # FAIR's Caffe2 ResNets: stride in the 3x3 conv
optimizer.lr = 0.01
train.init_checkpoint = "catalog://ImageNetPretrained/FAIR/R-50-GN"
