# Mask R-CNN R50-FPN built from gn_det's components: detectron2's LazyConfig model
# (configs/common/models/mask_rcnn_fpn.py) with gn_det's ResNet and FPN and gn_det's box head
# (Detectron's 4conv1fc) and mask head, which take `norm` and `ws`. Norms are detectron2's
# defaults here (FrozenBN backbone, no norm elsewhere); one override per component switches them:
#   model.backbone.bottom_up.norm / .ws          (ResNet)
#   model.backbone.norm / .ws                    (FPN)
#   model.roi_heads.box_head.norm / .ws          (4conv1fc box head)
#   model.roi_heads.mask_head.norm / .ws         (mask head)
from gn_det.modeling.roi_heads import GNFastRCNNConvFCHead, GNMaskRCNNConvUpsampleHead

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from .resnet_fpn import backbone

model = get_config("common/models/mask_rcnn_fpn.py").model
model.backbone = backbone  # res2-res5, P6 by max-pool, as detectron2's
model.roi_heads.box_head = L(GNFastRCNNConvFCHead)(
    input_shape=ShapeSpec(channels=256, height=7, width=7),
    conv_dims=[256, 256, 256, 256], fc_dims=[1024], norm="", ws=False)
model.roi_heads.mask_head = L(GNMaskRCNNConvUpsampleHead)(
    input_shape=ShapeSpec(channels=256, width=14, height=14),
    num_classes="${..num_classes}", conv_dims=[256, 256, 256, 256, 256], norm="", ws=False)
