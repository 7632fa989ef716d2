"""Converted weights files: reading a state dict without running code, writing detectron2's
converted-checkpoint format, and the report of a conversion."""
import dataclasses
import pickle
from pathlib import Path
from typing import Dict, List, Mapping

import torch

from ..utils.file_io import atomic_write
from .safe_load import CheckpointError, load_weights_file


class WeightsError(ValueError):
    """A weights file that cannot be read or converted; the message names the file."""


@dataclasses.dataclass
class ConversionReport:
    """What a conversion produced, and how it compares with the backbone it describes."""

    arch: object             # ResNetArch or BiTArch: what the weights describe (.describe())
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


def load_state_dict_file(path) -> Dict[str, object]:
    """A state dict from a torch checkpoint or a .safetensors file, read as training reads weights
    (gn_det.checkpoint.safe_load: no code execution); unwraps {'state_dict': ...} (mmcv) and
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


def save_d2_weights(weights: Mapping[str, torch.Tensor], path, author: str):
    """Write weights in detectron2's converted-checkpoint format: .pkl (numpy arrays, as
    detectron2's convert-torchvision-to-d2) or .pth (tensors; loads with weights_only=True)."""
    path = Path(path)
    data = {"__author__": author, "matching_heuristics": True}
    if path.suffix == ".pkl":
        data["model"] = {k: v.detach().cpu().numpy() for k, v in weights.items()}
        atomic_write(str(path), lambda f: pickle.dump(data, f))
    elif path.suffix == ".pth":
        data["model"] = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
        atomic_write(str(path), lambda f: torch.save(data, f))
    else:
        raise WeightsError(f"{path}: output must end in .pth or .pkl (detectron2 reads both)")
