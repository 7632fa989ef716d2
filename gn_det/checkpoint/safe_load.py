"""Reading checkpoint files without running code from them.

Torch files load with `torch.load(weights_only=True)`: tensors, numbers, strings and containers
only. Pickles run code when loaded, so a Caffe2 / Detectron `.pkl` loads only from a local path or
detectron2's model-zoo catalog (`detectron2://`, `catalog://`), with a one-line warning; a torch
file that holds other Python objects, or a `.pkl` from anywhere else, is refused unless the user
opts in with GN_DET_ALLOW_PICKLE=1.
"""
import logging
import os
import pickle
import re

import torch

from ..utils.errors import one_line

ALLOW_PICKLE_ENV = "GN_DET_ALLOW_PICKLE"
CATALOG_PREFIXES = ("detectron2://", "catalog://")
_UNSAFE_GLOBAL = re.compile(r"Unsupported (?:global|class):? (?:GLOBAL )?([\w.]+)")

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what would be valid."""


def pickle_opt_in() -> bool:
    return os.environ.get(ALLOW_PICKLE_ENV, "") not in ("", "0")


def pickle_source_allowed(requested: str) -> bool:
    """Pickles load from a local path or the model-zoo catalog the user named; URLs and other
    remote sources only with the opt-in."""
    return "://" not in requested or requested.startswith(CATALOG_PREFIXES) or pickle_opt_in()


def warn_unpickling(source: str, what: str) -> None:
    logger.warning("%s: unpickling %s, which can run code from the file; load only files you "
                   "trust", source, what)


def check_pickle_source(source: str, requested: str) -> None:
    """Refuse a pickle from a source the policy does not allow (see module docstring); `requested`
    is the path or URL as the user gave it, `source` names it in messages."""
    if not pickle_source_allowed(requested):
        raise CheckpointError(
            f"{source}: a pickle (.pkl) is loaded only from a local path or detectron2's model "
            f"zoo (detectron2://, catalog://), since unpickling runs code from the file; download "
            f"it, check where it comes from and pass the local path (or set {ALLOW_PICKLE_ENV}=1)")


def torch_load(path: str, source: str):
    """`torch.load(path, weights_only=True)`, with one-line CheckpointErrors naming `source` for
    unreadable files and for files that need full unpickling (loaded only with the opt-in)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _UNSAFE_GLOBAL.search(str(e))
        if not found:  # not an object the weights-only unpickler refuses: bad bytes
            detail = str(e).split("WeightsUnpickler error:")[-1].strip()
            raise CheckpointError(f"{source}: not a readable torch checkpoint "
                                  f"({one_line(pickle.UnpicklingError(detail), brief=True)});"
                                  " it may be "
                                  "truncated or corrupt, expected a file written by torch.save"
                                  ) from None
        what = f"Python objects of type {found.group(1)}"
        if not pickle_opt_in():
            raise CheckpointError(
                f"{source}: holds {what} besides tensors, which torch.load(weights_only=True) "
                f"refuses because unpickling them can run code; if you trust the file, rerun with "
                f"{ALLOW_PICKLE_ENV}=1, or re-save only its state dict") from None
    except Exception as e:  # truncated zip, garbage bytes, empty file, a directory, ...
        raise CheckpointError(f"{source}: not a readable torch checkpoint "
                              f"({one_line(e, brief=True)}); it "
                              "may be truncated or corrupt, expected a file written by "
                              "torch.save") from None
    warn_unpickling(source, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{source}: not a readable torch checkpoint "
                              f"({one_line(e, brief=True)})"
                              ) from None


def safetensors_load(path: str, source: str):
    """A .safetensors file's tensors (the format holds nothing else, so nothing can run), with
    one-line CheckpointErrors naming `source`."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{source}: reading .safetensors needs the safetensors package "
                              f"(pip install safetensors), or save the state dict with "
                              f"torch.save as a .pth") from None
    try:
        return load_file(path, device="cpu")
    except Exception as e:  # truncated header, garbage bytes, a directory, ...
        raise CheckpointError(f"{source}: not a readable safetensors file "
                              f"({one_line(e, brief=True)}); it may be truncated or corrupt"
                              ) from None


def load_weights_file(path: str, source: str):
    """A weights file without running code: .safetensors by safetensors, else `torch_load`
    (.pth, .pt, .bin: torch.save files)."""
    if str(path).endswith(".safetensors"):
        return safetensors_load(path, source)
    return torch_load(path, source)
