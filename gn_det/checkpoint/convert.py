"""Converting pretrained backbone weights into gn_det's naming (what tools/convert_weights.py
runs): a torchvision-naming ResNet or a timm ResNetV2 / BiT checkpoint, told apart by its names."""
from . import bit_weights
from .resnet_weights import convert_torchvision_state_dict_file
from .weights_file import ConversionReport, load_state_dict_file


def convert_weights_file(src, dst) -> ConversionReport:
    """Convert a torchvision-naming ResNet or a timm ResNetV2 / BiT
    checkpoint (told apart by their names) into gn_det's backbone naming; write `dst`."""
    state_dict = load_state_dict_file(src)
    if bit_weights.is_timm_resnetv2(state_dict):
        return bit_weights.convert_timm_state_dict_file(state_dict, src, dst)
    return convert_torchvision_state_dict_file(state_dict, src, dst)
