# RetinaNet R50-FPN built from gn_det's components: detectron2's LazyConfig model
# (configs/common/models/retinanet.py) with gn_det's ResNet, FPN and head, which take `norm` and
# `ws`. Norms are detectron2's defaults here (FrozenBN backbone, no norm in FPN and head); a
# preset or one override per component switches them:
#   model.backbone.bottom_up.norm=GN  model.backbone.bottom_up.ws=True   (ResNet)
#   model.backbone.norm=GN            model.backbone.ws=True             (FPN)
#   model.head.norm=GN                model.head.ws=True                 (RetinaNet head)
# `norm` takes what gn_det.layers.build_norm takes: a name ("GN", "BN", "FrozenBN", ...), a dict
# ({"type": "GN", "num_groups": 16}) or "" for none.
from gn_det.modeling.retinanet import GNRetinaNetHead

from detectron2.model_zoo import get_config

from .resnet_fpn import backbone

model = get_config("common/models/retinanet.py").model
top_block = model.backbone.top_block  # detectron2's P6/P7 from res5
model.backbone = backbone
model.backbone.bottom_up.out_features = ["res3", "res4", "res5"]
model.backbone.top_block = top_block
del top_block
model.head._target_ = GNRetinaNetHead
model.head.ws = False
