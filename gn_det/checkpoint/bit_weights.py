"""timm ResNetV2 state dicts (BiT's `resnetv2_*_bit`, as timm saves them: .pth / .bin /
.safetensors) in gn_det's BiT backbone naming (gn_det.modeling.bit), and their strict placement
into a model's BiT backbone.

Names: stem.conv.* -> stem.conv.*; stages.<i>.blocks.<j>.{norm1-3,conv1-3}.* -> res<i+2>.<j>.*;
stages.<i>.blocks.<j>.downsample.conv.* -> res<i+2>.<j>.shortcut.*; norm.* -> final_norm.*;
head.* (the classifier) has no counterpart.

Loading is strict, unlike name-matched backbone weights: a backbone tensor the file lacks, a file
tensor the backbone has no place for (another depth) or of another shape (another width) refuses
the file in one line naming the keys and the MODEL.BIT settings that fit it. Left out, and
logged, are only the classifier, the final norm when the backbone has none (MODEL.BIT.FINAL_NORM
False) and stages the backbone does not build (MODEL.BIT.OUT_FEATURES ending before res5).
"""
import dataclasses
import logging
import re
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..layers import NormSpec, WSConv2d
from ..modeling.bit import BIT_DEPTHS, STAGE_NAMES, TIMM_MODELS, BiTResNet, make_bit
from .keys import (BN_STEP_COUNTER, compare_keys, rename_state_dict, strip_module_prefix,
                   summarize_keys)
from .safe_load import CheckpointError
from .weights_file import ConversionReport, WeightsError, save_d2_weights

AUTHOR = "gn_det convert_weights (timm ResNetV2 / BiT naming)"
_BLOCK = re.compile(r"^stages\.([0-3])\.blocks\.(\d+)\.(norm[1-3]|conv[1-3]|downsample\.conv)\."
                    r"(.+)$")
_SHOWN = 3
BIT_INPUT_HINT = ("BiT weights need RGB input scaled to [-1, 1]: INPUT.FORMAT RGB, "
                  "MODEL.PIXEL_MEAN [127.5, 127.5, 127.5], MODEL.PIXEL_STD [127.5, 127.5, 127.5]")
BIT_BACKBONE_HINT = ("load them with MODEL.BACKBONE.NAME build_gn_bit_backbone, "
                     "build_gn_bit_fpn_backbone or build_gn_retinanet_bit_fpn_backbone")
logger = logging.getLogger(__name__)


def is_timm_resnetv2(state_dict: Mapping[str, object]) -> bool:
    """Whether a state dict uses timm ResNetV2's names (its 7x7 stem and stage blocks)."""
    keys = {strip_module_prefix(k) for k in state_dict}
    return "stem.conv.weight" in keys and any(k.startswith("stages.0.blocks.0.") for k in keys)


def rename_timm_key(key: str) -> Optional[str]:
    """gn_det's BiT name of one timm ResNetV2 key, or None if it has none (the classifier)."""
    if key.startswith("stem.conv."):
        return key
    if key.startswith("norm."):
        return "final_" + key
    m = _BLOCK.match(key)
    if not m:
        return None
    stage, block, layer, param = m.groups()
    layer = "shortcut" if layer == "downsample.conv" else layer
    return f"res{int(stage) + 2}.{block}.{layer}.{param}"


def convert_timm_state_dict(state_dict: Mapping[str, object]
                            ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a timm ResNetV2 state dict (rename_state_dict's returns; e.g. head.fc.* has no
    backbone counterpart)."""
    return rename_state_dict(state_dict, rename_timm_key)


@dataclasses.dataclass(frozen=True)
class BiTArch:
    """The ResNetV2 a set of BiT-named weights describes, from its names and shapes."""

    blocks_per_stage: Tuple[int, ...]
    stem_out_channels: int
    res2_out_channels: int
    in_channels: int
    norm: str          # "GN" (no running statistics), "FrozenBN" (BN statistics) or ""
    final_norm: bool

    def _depth_width(self) -> Optional[Tuple[int, int]]:
        for depth, width in TIMM_MODELS.values():
            if (self.blocks_per_stage == BIT_DEPTHS[depth] and self.stem_out_channels == 64 * width
                    and self.res2_out_channels == 256 * width):
                return depth, width
        return None

    @property
    def timm_model(self) -> Optional[str]:
        """timm's BiT model name when the depth and widths are one of BiT's and the norm GN."""
        found = self._depth_width()
        if self.norm != "GN" or found is None:
            return None
        return next(n for n, dw in TIMM_MODELS.items() if dw == found)

    def make_bit_kwargs(self) -> dict:
        found = self._depth_width()
        if found:
            return dict(depth=found[0], width_factor=found[1])
        return dict(depth=0, blocks_per_stage=self.blocks_per_stage,
                    stem_out_channels=self.stem_out_channels,
                    res2_out_channels=self.res2_out_channels)

    def config_opts(self) -> str:
        """The MODEL.BIT and MODEL.NORMS.BACKBONE settings that build this network."""
        keys = {"depth": "DEPTH", "width_factor": "WIDTH_FACTOR",
                "blocks_per_stage": "BLOCKS_PER_STAGE", "stem_out_channels": "STEM_OUT_CHANNELS",
                "res2_out_channels": "RES2_OUT_CHANNELS"}
        opts = [f"MODEL.BIT.{keys[k]} {list(v) if isinstance(v, tuple) else v}"
                for k, v in self.make_bit_kwargs().items()]
        if not self.final_norm:
            opts.append("MODEL.BIT.FINAL_NORM False")
        opts.append({"GN": "MODEL.NORMS.BACKBONE {TYPE: GN, WS: True}",
                     "FrozenBN": "MODEL.NORMS.BACKBONE.TYPE FrozenBN or BN",
                     "": "MODEL.NORMS.BACKBONE.TYPE none"}[self.norm])
        return ", ".join(opts)

    def describe(self) -> str:
        name, found = self.timm_model, self._depth_width()
        if name:
            kind = f"BiT ResNetV2-{name.split('_')[1]} (timm {name})"
        elif found:
            kind = f"ResNetV2-{found[0]}x{found[1]}"
        else:
            kind = (f"ResNetV2 with {list(self.blocks_per_stage)} blocks, stem "
                    f"{self.stem_out_channels}, res2 {self.res2_out_channels} channels")
        norm = {"GN": "GN", "FrozenBN": "BN", "": "no norm"}[self.norm]
        return f"{kind}, {norm}" + ("" if self.final_norm else ", no final norm")


def infer_bit_arch(weights: Mapping[str, torch.Tensor]) -> BiTArch:
    """BiTArch from gn_det-named BiT weights; ValueError when they describe no BiT network."""
    if "stem.conv.weight" not in weights:
        raise ValueError("no ResNetV2 stem weights (stem.conv.weight) found")
    blocks, outs = [], []
    for stage in STAGE_NAMES:
        ids = {int(k.split(".")[1]) for k in weights if k.startswith(stage + ".")}
        blocks.append(max(ids) + 1 if ids else 0)
        conv3 = weights.get(f"{stage}.0.conv3.weight")
        outs.append(conv3.shape[0] if conv3 is not None else 0)
    if not all(blocks) or any(o != outs[0] * 2 ** i for i, o in enumerate(outs)):
        raise ValueError(f"blocks per stage {blocks} with output channels {outs}: expected 4 "
                         f"stages of bottlenecks, each twice as wide as the one before")
    if any(k.endswith(".running_mean") for k in weights):
        norm = "FrozenBN"
    elif "res2.0.norm1.weight" in weights:
        norm = "GN"
    else:
        norm = ""
    stem = weights["stem.conv.weight"]
    return BiTArch(tuple(blocks), stem.shape[0], outs[0], stem.shape[1], norm,
                   "final_norm.weight" in weights or "final_norm.running_mean" in weights)


def arch_shapes(arch: BiTArch) -> Dict[str, tuple]:
    """Names and shapes of gn_det's BiT backbone for `arch`, built on the meta device (no memory:
    152x4 has 936 M parameters). The GN group count changes no name or shape."""
    norm = NormSpec("GN", num_groups=1) if arch.norm == "GN" else NormSpec(arch.norm)
    with torch.device("meta"):
        model = make_bit(norm=norm, ws=False, in_channels=arch.in_channels,
                         final_norm=arch.final_norm, **arch.make_bit_kwargs())
    return _shapes(model)


def _shapes(module) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()
            if not BN_STEP_COUNTER.search(k)}


def convert_timm_state_dict_file(state_dict: Mapping[str, object], src, dst) -> ConversionReport:
    """Convert a timm ResNetV2 state dict read from `src`, write `dst` (.pth/.pkl, detectron2's
    converted format, loaded strictly as in the module docstring) and return the report."""
    converted, unexpected = convert_timm_state_dict(state_dict)
    try:
        arch = infer_bit_arch(converted)
    except ValueError as e:
        raise WeightsError(f"{src}: not a timm ResNetV2 / BiT checkpoint ({e})") from None
    missing, not_in_backbone, mismatched = compare_keys(converted, arch_shapes(arch))
    save_d2_weights(converted, dst, author=AUTHOR)
    notes = [f"the network: {arch.config_opts()}; {BIT_BACKBONE_HINT}", BIT_INPUT_HINT]
    return ConversionReport(arch, len(converted), missing, unexpected + not_in_backbone,
                            mismatched, notes=notes)


def timm_checkpoint(state_dict: Mapping[str, object], source: str) -> dict:
    """The checkpoint AtomicCheckpointer loads for a timm ResNetV2 state dict: converted, with
    the keys that have no counterpart kept for the log."""
    converted, unexpected = convert_timm_state_dict(state_dict)
    classifier = [k for k in unexpected if strip_module_prefix(k).startswith("head.")]
    others = [k for k in unexpected if k not in classifier]
    if others:
        raise CheckpointError(f"{source}: timm ResNetV2 weights with tensors of no BiT layer "
                              f"({summarize_keys(others)}); expected timm's resnetv2_*_bit "
                              f"names (stem.conv, stages.N.blocks.M.*, norm, head.fc)")
    return {"model": converted, "__author__": AUTHOR, "classifier": classifier}


def _bit_backbones(model: torch.nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BiTResNet)]


def prepare_checkpoint(checkpoint: dict, model: torch.nn.Module, source: str) -> dict:
    """AtomicCheckpointer's step before loading: BiT weights (timm files, converted on load, and
    convert_weights outputs) are named as in `model` and checked (place_in_model); name-matched
    weights of other backbones (converted ResNets, Caffe2 .pkl), whose conv names and shapes
    partly coincide with BiT's, are refused for a model with a BiT backbone."""
    if checkpoint.get("__author__") == AUTHOR:
        weights = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v
                   for k, v in checkpoint["model"].items()}  # .pkl outputs hold numpy arrays
        placed = place_in_model(dict(checkpoint, model=weights), model, source)
        return dict(checkpoint, model=placed, matching_heuristics=False)
    if checkpoint.get("matching_heuristics") and _bit_backbones(model):
        raise CheckpointError(
            f"{source}: holds backbone weights of another network "
            f"({checkpoint.get('__author__', 'name-matched')}), which a BiT backbone does not "
            f"take: a pre-activation ResNetV2 with BiT's names; pass a timm ResNetV2 / BiT state "
            f"dict (resnetv2_*_bit), or MODEL.WEIGHTS \"\" to train from scratch")
    return checkpoint


def place_in_model(checkpoint: Mapping, model: torch.nn.Module, source: str) -> Dict[str, object]:
    """The BiT weights of `checkpoint` named as in `model` (the one BiT backbone in it), checked
    strictly (module docstring); CheckpointError in one line naming the keys otherwise."""
    weights = checkpoint["model"]
    found = _bit_backbones(model)
    if len(found) != 1:
        raise CheckpointError(f"{source}: holds timm ResNetV2 (BiT) weights, but the model has "
                              f"{len(found) or 'no'} BiT backbones; {BIT_BACKBONE_HINT}")
    prefix, backbone = found[0]
    built = set(backbone.stage_names)

    def optional(key):
        head = key.split(".")[0]
        return (head in STAGE_NAMES and head not in built) or \
            (head == "final_norm" and backbone.final_norm is None)

    missing, unexpected, mismatched = compare_keys(weights, _shapes(backbone), optional)
    if missing or unexpected or mismatched:
        parts = [f"{len(mismatched)} tensors have another shape (file vs backbone): "
                 + ", ".join(mismatched[:_SHOWN]) + (" ..." if len(mismatched) > _SHOWN else "")
                 ] if mismatched else []
        parts += [f"the file lacks {summarize_keys(missing)}"] if missing else []
        parts += [f"the backbone has no place for {summarize_keys(unexpected)}"] if unexpected \
            else []
        try:
            arch = infer_bit_arch(weights)
            fits = f"; the file is {arch.describe()}: {arch.config_opts()}"
        except ValueError:
            fits = ""
        raise CheckpointError(f"{source}: timm ResNetV2 weights of another network than the "
                              f"model's BiT backbone ({'; '.join(parts)}){fits}")
    left_out = sorted(k for k in weights if optional(k)) + list(checkpoint.get("classifier", ()))
    if left_out:
        logger.info("%s: not used by the BiT backbone: %s", source, summarize_keys(left_out))
    plain = [n for n, m in backbone.named_modules()
             if isinstance(m, torch.nn.Conv2d) and not isinstance(m, WSConv2d)]
    if plain and "res2.0.norm1.running_mean" not in weights:
        logger.warning("%s: BiT's GN weights were trained with Weight Standardization, but %d "
                       "backbone convs are plain (e.g. %s); set MODEL.NORMS.BACKBONE.WS True",
                       source, len(plain), plain[0])
    prefix = prefix + "." if prefix else ""
    return {prefix + k: v for k, v in weights.items() if not optional(k)}


def compare_with_timm(name: str, size: int = 64, outputs: bool = True, seed: int = 0) -> dict:
    """Our backbone against timm's `name` (a TIMM_MODELS key; needs timm): parameter counts, and
    with `outputs` the largest absolute difference of res2-res5 from timm's (features_only for
    res2-res4, forward_features for res5) on one random size x size image, both networks holding
    the same random weights (timm's state dict, converted as MODEL.WEIGHTS converts it). Built on
    the meta device first, so no time goes into initializations that are overwritten."""
    import timm
    from timm.models import FeatureListNet

    depth, width = TIMM_MODELS[name]
    theirs = timm.create_model(name, pretrained=False, device="meta")
    with torch.device("meta"):
        ours = make_bit(depth=depth, width_factor=width)
    row = {"timm_model": name, "config": f"MODEL.BIT.DEPTH {depth} MODEL.BIT.WIDTH_FACTOR {width}",
           "ours_backbone": sum(p.numel() for p in ours.parameters()),
           "timm_backbone": sum(p.numel() for n, p in theirs.named_parameters()
                                if not n.startswith("head.")),
           "timm_with_classifier": sum(p.numel() for p in theirs.parameters())}
    if not outputs:
        return row
    generator = torch.Generator().manual_seed(seed)
    theirs = theirs.to_empty(device="cpu").eval()
    with torch.no_grad():
        for key, p in theirs.named_parameters():  # GN affine around 1 / 0, convs around 0
            p.normal_(1.0 if p.ndim == 1 and key.endswith("weight") else 0.0, 0.1,
                      generator=generator)
    checkpoint = timm_checkpoint(theirs.state_dict(), name)
    ours = ours.to_empty(device="cpu").eval()
    ours.load_state_dict(place_in_model(checkpoint, ours, name))
    x = torch.randn(1, 3, size, size, generator=generator)
    with torch.no_grad():
        final = theirs.forward_features(x)
        features = FeatureListNet(theirs, out_indices=(1, 2, 3, 4), flatten_sequential=True)(x)
        out = ours(x)
    diffs = {stage: float((out[stage] - f).abs().max()) for stage, f in zip(STAGE_NAMES[:3],
                                                                            features)}
    diffs["res5"] = float((out["res5"] - final).abs().max())
    row.update(input=f"1x3x{size}x{size}", max_abs_diff=max(diffs.values()), per_stage=diffs)
    return row
