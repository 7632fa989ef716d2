# RetinaNet R50-FPN 1x on COCO with GN + Weight Standardization in backbone, FPN and head: the
# LazyConfig twin of configs/RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml (see its note on
# GN+WS ImageNet weights).
from .retinanet_R_50_FPN_1x_gn_all import (dataloader, datasets, lr_multiplier, model,  # noqa: F401
                                           optimizer, train)

model.backbone.bottom_up.ws = True
model.backbone.ws = True
model.head.ws = True
