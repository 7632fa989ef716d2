"""gn_det's detectron2 components; importing a module registers what it defines."""
from . import resnet  # noqa: F401  (BACKBONE_REGISTRY: build_gn_resnet_backbone)
from . import fpn  # noqa: F401  (BACKBONE_REGISTRY: build_gn_[retinanet_]resnet_fpn_backbone)
from . import bit  # noqa: F401  (BACKBONE_REGISTRY: build_gn_[retinanet_]bit[_fpn]_backbone)
from . import retinanet  # noqa: F401  (META_ARCH_REGISTRY: GNRetinaNet)
from . import roi_heads  # noqa: F401  (ROI_BOX_HEAD / ROI_MASK_HEAD_REGISTRY: GNFastRCNNConvFCHead, GNMaskRCNNConvUpsampleHead)
