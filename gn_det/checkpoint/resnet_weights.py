"""Pretrained ResNet weights in torchvision naming, converted to detectron2's backbone naming.

Detectron / Caffe2 weights (R-50-GN.pkl: `res2_0_branch2a_w`, `res2_0_branch2a_gn_s`, ...) need
nothing from here: detectron2's DetectionCheckpointer renames them (c2_model_loading maps `_gn_s`
/ `_gn_b` to `norm.weight` / `norm.bias`) into GN and GN+WS backbones alike, since WS keeps the
conv parameter names.

This module converts torchvision-naming state dicts (torchvision, timm, and mmdet's GN and GN+WS
ImageNet weights: `conv1`, `bn1`/`gn1`, `layerN.i.convK`, `layerN.i.downsample.0/1`) into
`stem.conv1.weight`, `res2.0.conv1.norm.weight`, `res2.0.shortcut.norm.weight`, ... and saves them
as detectron2 does in its convert-torchvision-to-d2 tool: `{"model", "__author__",
"matching_heuristics": True}`, so DetectionCheckpointer matches them into any model that holds the
backbone (bare, under FPN, or in a meta-architecture).
"""
import dataclasses
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from ..layers import NormSpec
from ..modeling.resnet import BLOCKS_PER_STAGE, STAGE_NAMES, make_resnet
from .keys import compare_keys, rename_state_dict
from .weights_file import ConversionReport, WeightsError, load_state_dict_file, save_d2_weights

AUTHOR = "gn_det convert_weights (torchvision naming)"
_STEM = re.compile(r"^conv1\.(weight)$|^(?:bn|gn)1\.(.+)$")
_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(?:conv([1-3])\.(weight)|(?:bn|gn)([1-3])\.(.+)"
                    r"|downsample\.([01])\.(.+))$")
# torchvision ImageNet input convention, printed as a hint (as detectron2's own tool does).
TORCHVISION_INPUT_HINT = ("torchvision-style weights (stride in the 3x3 conv, RGB input in 0-255 "
                          "normalized by ImageNet mean/std) need: "
                          "MODEL.RESNETS.STRIDE_IN_1X1 False, INPUT.FORMAT RGB, "
                          "MODEL.PIXEL_MEAN [123.675, 116.28, 103.53], "
                          "MODEL.PIXEL_STD [58.395, 57.12, 57.375]")
WS_HINT = ("weights trained with Weight Standardization (e.g. mmdet's jhu/resnet50_gn_ws, mmcv "
           "ConvWS2d) need MODEL.NORMS.BACKBONE.WS True and MODEL.NORMS.WS.STYLE mmcv; timm "
           "StdConv2d weights need STYLE timm")


def rename_torchvision_key(key: str) -> Optional[str]:
    """The detectron2 backbone name of one torchvision ResNet key, or None if it has none
    (e.g. the classifier `fc.weight`)."""
    m = _STEM.match(key)
    if m:
        return "stem.conv1.weight" if m.group(1) else f"stem.conv1.norm.{m.group(2)}"
    m = _BLOCK.match(key)
    if not m:
        return None
    layer, block, conv, conv_param, norm, norm_param, ds, ds_param = m.groups()
    prefix = f"res{int(layer) + 1}.{block}"
    if conv:
        return f"{prefix}.conv{conv}.{conv_param}"
    if norm:
        return f"{prefix}.conv{norm}.norm.{norm_param}"
    return f"{prefix}.shortcut.{ds_param}" if ds == "0" else f"{prefix}.shortcut.norm.{ds_param}"


def convert_torchvision_state_dict(state_dict: Mapping[str, object]
                                   ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a torchvision-naming ResNet state dict (rename_state_dict's returns)."""
    return rename_state_dict(state_dict, rename_torchvision_key)


@dataclasses.dataclass
class ResNetArch:
    """The ResNet a set of backbone weights describes, inferred from its names and shapes."""

    depth: int
    num_groups: int
    width_per_group: int
    in_channels: int
    stem_out_channels: int
    res2_out_channels: int
    norm: str  # "GN" (no running stats), "FrozenBN" (BN running stats) or "" (no norm)

    def describe(self) -> str:
        kind = f"ResNeXt-{self.depth} {self.num_groups}x{self.width_per_group}d" \
            if self.num_groups > 1 else f"ResNet-{self.depth}"
        norm = {"GN": "GN", "FrozenBN": "BN", "": "no norm"}[self.norm]
        return f"{kind}, {norm}"


def infer_resnet_arch(weights: Mapping[str, torch.Tensor]) -> ResNetArch:
    """Depth, width and norm kind from detectron2-named backbone weights; ValueError if they do
    not describe a ResNet of a supported depth."""
    if "stem.conv1.weight" not in weights:
        raise ValueError("no ResNet stem weights (conv1.weight) found")
    blocks = []
    for stage in STAGE_NAMES:
        ids = {int(k.split(".")[1]) for k in weights if k.startswith(stage + ".")}
        blocks.append(max(ids) + 1 if ids else 0)
    bottleneck = "res2.0.conv3.weight" in weights
    depth = next((d for d, n in BLOCKS_PER_STAGE.items()
                  if tuple(blocks) == n and (d >= 50) == bottleneck), None)
    if depth is None:
        raise ValueError(f"blocks per stage {blocks} ({'bottleneck' if bottleneck else 'basic'}) "
                         f"match no ResNet depth of {', '.join(map(str, BLOCKS_PER_STAGE))}")
    stem = weights["stem.conv1.weight"]
    groups, width, res2_out = 1, 64, 64
    if bottleneck:
        conv2 = weights["res2.0.conv2.weight"]
        groups = conv2.shape[0] // conv2.shape[1]
        width = conv2.shape[0] // groups
        res2_out = weights["res2.0.conv3.weight"].shape[0]
    if any(k.endswith(".norm.running_mean") for k in weights):
        norm = "FrozenBN"
    elif any(k.endswith(".norm.weight") for k in weights):
        norm = "GN"
    else:
        norm = ""
    return ResNetArch(depth, groups, width, stem.shape[1], stem.shape[0], res2_out, norm)


def compare_with_backbone(weights: Mapping[str, torch.Tensor], arch: ResNetArch
                          ) -> Tuple[List[str], List[str], List[str]]:
    """(missing, unexpected, mismatched) of `weights` against the ResNet `arch` describes, built
    by gn_det's own builder (the norm's group count does not change names or shapes)."""
    norm = NormSpec("GN", num_groups=1) if arch.norm == "GN" else NormSpec(arch.norm)
    model = make_resnet(depth=arch.depth, norm=norm, in_channels=arch.in_channels,
                        stem_out_channels=arch.stem_out_channels,
                        res2_out_channels=arch.res2_out_channels, num_groups=arch.num_groups,
                        width_per_group=arch.width_per_group)
    return compare_keys(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()})


def convert_torchvision_file(src, dst) -> ConversionReport:
    """Read a torchvision-naming ResNet checkpoint, convert it, write `dst` (.pth/.pkl) and return
    the report. Raises WeightsError (naming the file) on unreadable or non-ResNet input."""
    return convert_torchvision_state_dict_file(load_state_dict_file(src), src, dst)


def convert_torchvision_state_dict_file(state_dict: Mapping[str, object], src, dst
                                        ) -> ConversionReport:
    """Convert a torchvision-naming state dict read from `src`, write `dst`, return the report."""
    converted, unexpected = convert_torchvision_state_dict(state_dict)
    try:
        arch = infer_resnet_arch(converted)
    except ValueError as e:
        raise WeightsError(f"{src}: not a torchvision-naming ResNet ({e}; expected keys like "
                           f"conv1.weight, bn1.weight or gn1.weight, layer1.0.conv1.weight) nor a "
                           f"timm ResNetV2 (stem.conv.weight, stages.0.blocks.0.conv1.weight)"
                           ) from None
    missing, not_in_backbone, mismatched = compare_with_backbone(converted, arch)
    save_d2_weights(converted, dst, AUTHOR)
    return ConversionReport(arch, len(converted), missing, unexpected + not_in_backbone,
                            mismatched, notes=[TORCHVISION_INPUT_HINT, WS_HINT])
