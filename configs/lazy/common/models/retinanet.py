# RetinaNet R50-FPN built from gn_det's components: detectron2's LazyConfig model
# (configs/common/models/retinanet.py) with gn_det's ResNet, FPN and head, which take `norm` and
# `ws`. Norms are detectron2's defaults here (FrozenBN backbone, no norm in FPN and head); a
# preset or one override per component switches them:
#   model.backbone.bottom_up.norm=GN  model.backbone.bottom_up.ws=True   (ResNet)
#   model.backbone.norm=GN            model.backbone.ws=True             (FPN)
#   model.head.norm=GN                model.head.ws=True                 (RetinaNet head)
# `norm` takes what gn_det.layers.build_norm takes: a name ("GN", "BN", "FrozenBN", ...), a dict
# ({"type": "GN", "num_groups": 16}) or "" for none.
from gn_det.modeling.fpn import make_fpn
from gn_det.modeling.resnet import make_resnet
from gn_det.modeling.retinanet import GNRetinaNetHead

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

model = get_config("common/models/retinanet.py").model
model.backbone._target_ = make_fpn
model.backbone.norm = ""
model.backbone.ws = False
model.backbone.bottom_up = L(make_resnet)(
    depth=50, norm="FrozenBN", ws=False, stride_in_1x1=True,
    out_features=["res3", "res4", "res5"], freeze_at=2)
model.head._target_ = GNRetinaNetHead
model.head.ws = False
