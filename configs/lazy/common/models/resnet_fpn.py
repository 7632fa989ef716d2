# gn_det's ResNet-50-FPN backbone as a LazyConfig node, for the models in this folder: detectron2's
# FPN over detectron2's ResNet (gn_det.modeling: make_fpn, make_resnet), both taking `norm` and
# `ws`. FrozenBN ResNet and no norm in the FPN, as detectron2's defaults; a model sets its own
# out_features and top block.
from gn_det.modeling.fpn import make_fpn
from gn_det.modeling.resnet import make_resnet

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

backbone = L(make_fpn)(
    bottom_up=L(make_resnet)(depth=50, norm="FrozenBN", ws=False, stride_in_1x1=True,
                             out_features=["res2", "res3", "res4", "res5"], freeze_at=2),
    in_features="${.bottom_up.out_features}", out_channels=256, norm="", ws=False,
    top_block=L(LastLevelMaxPool)())
