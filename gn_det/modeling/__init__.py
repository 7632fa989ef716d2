"""gn_det's detectron2 components; importing a module registers what it defines."""
from . import resnet  # noqa: F401  (BACKBONE_REGISTRY: build_gn_resnet_backbone)
from . import fpn  # noqa: F401  (BACKBONE_REGISTRY: build_gn_[retinanet_]resnet_fpn_backbone)
