# Mask R-CNN R50-FPN 1x on COCO with GN + WS in backbone, FPN, box head and mask head: the
# LazyConfig twin of configs/RCNN/mask_rcnn_R_50_FPN_1x_gnws.yaml.
from .mask_rcnn_R_50_FPN_1x_gn import (dataloader, datasets, lr_multiplier, model,  # noqa: F401
                                       optimizer, train)

model.backbone.bottom_up.ws = True
model.backbone.ws = True
model.roi_heads.box_head.ws = True
model.roi_heads.mask_head.ws = True
