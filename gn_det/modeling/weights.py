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
import pickle
import re
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..engine.safe_load import CheckpointError, load_weights_file
from ..layers import NormSpec
from .resnet import BLOCKS_PER_STAGE, STAGE_NAMES, make_resnet

AUTHOR = "gn_det convert_weights (torchvision naming)"
_STEM = re.compile(r"^conv1\.(weight)$|^(?:bn|gn)1\.(.+)$")
_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.(?:conv([1-3])\.(weight)|(?:bn|gn)([1-3])\.(.+)"
                    r"|downsample\.([01])\.(.+))$")
BN_STEP_COUNTER = re.compile(r"(^|\.)num_batches_tracked$")  # BN step counters, not weights
# torchvision ImageNet input convention, printed as a hint (as detectron2's own tool does).
TORCHVISION_INPUT_HINT = ("torchvision-style weights (stride in the 3x3 conv, RGB input in 0-255 "
                          "normalized by ImageNet mean/std) need: "
                          "MODEL.RESNETS.STRIDE_IN_1X1 False, INPUT.FORMAT RGB, "
                          "MODEL.PIXEL_MEAN [123.675, 116.28, 103.53], "
                          "MODEL.PIXEL_STD [58.395, 57.12, 57.375]")
WS_HINT = ("weights trained with Weight Standardization (e.g. mmdet's jhu/resnet50_gn_ws, mmcv "
           "ConvWS2d) need MODEL.NORMS.BACKBONE.WS True and MODEL.NORMS.WS.STYLE mmcv; timm "
           "StdConv2d weights need STYLE timm")


class WeightsError(ValueError):
    """A weights file that cannot be read or converted; the message names the file."""


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


def strip_module_prefix(key: str) -> str:
    """`key` without the leading 'module.' that DataParallel / DDP checkpoints carry."""
    return key[len("module."):] if key.startswith("module.") else key


def rename_state_dict(state_dict: Mapping[str, object], rename: Callable[[str], Optional[str]]
                      ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a checkpoint's tensors with `rename` (None: no backbone counterpart). Returns
    (converted weights, keys without a counterpart). A leading 'module.' is stripped, BN step
    counters are dropped and numpy arrays become tensors."""
    converted, unexpected = {}, []
    for key, value in state_dict.items():
        bare = strip_module_prefix(key)
        if BN_STEP_COUNTER.search(bare):
            continue
        new = rename(bare)
        if new is None:
            unexpected.append(key)
        else:
            converted[new] = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
    return converted, unexpected


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


@dataclasses.dataclass
class ConversionReport:
    """What a conversion produced, and how it compares with the backbone it describes."""

    arch: ResNetArch          # or bit_weights.BiTArch: what the weights describe (.describe())
    num_converted: int
    missing: List[str]        # backbone keys the input did not provide
    unexpected: List[str]     # input keys without a backbone counterpart (e.g. fc.*)
    mismatched: List[str]     # 'key: input shape vs backbone shape'
    notes: List[str] = dataclasses.field(default_factory=list)  # settings the weights need

    def lines(self) -> List[str]:
        out = [f"{self.arch.describe()}: {self.num_converted} tensors converted"]
        for title, keys in [("missing (backbone keys not in the input)", self.missing),
                            ("unexpected (input keys not in the backbone)", self.unexpected),
                            ("shape mismatch", self.mismatched)]:
            out.append(f"{title}: {len(keys)}" + ("" if not keys else ": " + ", ".join(keys)))
        return out


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


def compare_keys(weights: Mapping[str, torch.Tensor], expected: Mapping[str, tuple],
                 optional=lambda key: False) -> Tuple[List[str], List[str], List[str]]:
    """(missing, unexpected, mismatched) of `weights` against backbone names -> shapes; keys for
    which `optional(key)` holds are neither missing nor unexpected."""
    missing = sorted(k for k in expected if k not in weights)
    unexpected = sorted(k for k in weights if k not in expected and not optional(k))
    mismatched = sorted(f"{k}: {tuple(v.shape)} vs {expected[k]}" for k, v in weights.items()
                        if k in expected and tuple(v.shape) != expected[k])
    return missing, unexpected, mismatched


def load_state_dict_file(path) -> Dict[str, object]:
    """A state dict from a torch checkpoint or a .safetensors file, read as training reads weights
    (gn_det.engine.safe_load: no code execution); unwraps {'state_dict': ...} (mmcv) and
    {'model': ...} (detectron2) containers."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        data = load_weights_file(str(path), str(path))
    except CheckpointError as e:
        raise WeightsError(str(e)) from None
    for container in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(container), Mapping):
            data = data[container]
    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise WeightsError(f"{path}: expected a state dict (name -> tensor), got "
                           f"{type(data).__name__}")
    return dict(data)


def save_d2_weights(weights: Mapping[str, torch.Tensor], path, author: str = AUTHOR):
    """Write weights in detectron2's converted-checkpoint format: .pkl (numpy arrays, as
    detectron2's convert-torchvision-to-d2) or .pth (tensors; loads with weights_only=True)."""
    path = Path(path)
    data = {"__author__": author, "matching_heuristics": True}
    if path.suffix == ".pkl":
        data["model"] = {k: v.detach().cpu().numpy() for k, v in weights.items()}
        with open(path, "wb") as f:
            pickle.dump(data, f)
    elif path.suffix == ".pth":
        data["model"] = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
        torch.save(data, path)
    else:
        raise WeightsError(f"{path}: output must end in .pth or .pkl (detectron2 reads both)")


def convert_torchvision_file(src, dst) -> ConversionReport:
    """Read a torchvision-naming ResNet checkpoint, convert it, write `dst` (.pth/.pkl) and return
    the report. Raises WeightsError (naming the file) on unreadable or non-ResNet input."""
    return _convert_torchvision(load_state_dict_file(src), src, dst)


def convert_weights_file(src, dst) -> ConversionReport:
    """tools/convert_weights.py: convert a torchvision-naming ResNet or a timm ResNetV2 / BiT
    checkpoint (told apart by their names) into gn_det's backbone naming; write `dst`."""
    from . import bit_weights  # it builds on this module

    state_dict = load_state_dict_file(src)
    if bit_weights.is_timm_resnetv2(state_dict):
        return bit_weights.convert_timm_state_dict_file(state_dict, src, dst)
    return _convert_torchvision(state_dict, src, dst)


def _convert_torchvision(state_dict, src, dst) -> ConversionReport:
    converted, unexpected = convert_torchvision_state_dict(state_dict)
    try:
        arch = infer_resnet_arch(converted)
    except ValueError as e:
        raise WeightsError(f"{src}: not a torchvision-naming ResNet ({e}; expected keys like "
                           f"conv1.weight, bn1.weight or gn1.weight, layer1.0.conv1.weight) nor a "
                           f"timm ResNetV2 (stem.conv.weight, stages.0.blocks.0.conv1.weight)"
                           ) from None
    missing, not_in_backbone, mismatched = compare_with_backbone(converted, arch)
    save_d2_weights(converted, dst)
    return ConversionReport(arch, len(converted), missing, unexpected + not_in_backbone,
                            mismatched, notes=[TORCHVISION_INPUT_HINT, WS_HINT])
