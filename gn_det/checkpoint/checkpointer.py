"""AtomicCheckpointer: detectron2's DetectionCheckpointer with atomic saves and checked loads.

Saves: temp file + fsync + rename, so a kill during a save leaves the previous checkpoint and the
`last_checkpoint` pointer intact; a model with NaN/inf weights is never saved.

Loads: files are read without running code (gn_det.checkpoint.safe_load); a missing or
unreadable file, weights of another shape than the model's (named, unless `skip_mismatched`), a
file for another architecture (nothing matches) and, on resume, any difference from the model end
in one CheckpointError line. Missing / unexpected keys are logged as a summary grouped by prefix,
not as one line per key. timm ResNetV2 / BiT state dicts (.pth, .bin, .safetensors) are converted on
load and placed strictly into the model's BiT backbone (gn_det.checkpoint.bit_weights).
"""
import glob
import os
from typing import Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from ..utils.errors import one_line
from ..utils.file_io import atomic_write
from . import bit_weights
from .keys import summarize_keys
from .safe_load import CheckpointError, check_pickle_source, load_weights_file, warn_unpickling

_SHOWN = 3  # mismatched keys named in an error


def first_non_finite(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The first floating-point tensor of a state dict holding NaN or inf, or None."""
    for key, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and \
                not bool(torch.isfinite(value).all()):
            return key
    return None


class AtomicCheckpointer(DetectionCheckpointer):
    """Saves like detectron2's checkpointer (same file names and contents), atomically; loads
    with the checks in the module docstring. `skip_mismatched` (MODEL.SKIP_MISMATCHED_WEIGHTS)
    leaves tensors of another shape at their initialization, with a warning naming them, instead
    of refusing them (never on resume). `strict`: any missing or unexpected tensor is refused
    too, as on resume (export: the file must hold exactly the model the config builds)."""

    weights_key = "MODEL.WEIGHTS"  # how messages name a file passed to load()

    def __init__(self, model, save_dir="", *, skip_mismatched: bool = False,
                 strict: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.skip_mismatched = skip_mismatched
        self.strict = strict
        # A module whose weights are saved as "model" instead of the model's (the EMA of the
        # weights: gn_det.engine.ema); None = the model's.
        self.saved_model = None
        self._resuming = False
        self._source = ""
        if self.save_to_disk and save_dir and os.path.isdir(save_dir):
            for stale in glob.glob(os.path.join(save_dir, ".*.tmp")):  # from a killed save
                os.unlink(stale)

    # ------------------------------------------------------------------------------ saving

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        basename = f"{name}.pth"
        state = (self.model if self.saved_model is None else self.saved_model).state_dict()
        bad = first_non_finite(state)
        if bad is not None:
            last = self.get_checkpoint_file() if self.has_checkpoint() else "none"
            raise FloatingPointError(
                f"not saving {basename}: model weight {bad} is NaN/inf (iteration "
                f"{kwargs.get('iteration', '?')}); the last good checkpoint is {last}; lower "
                f"SOLVER.BASE_LR or raise SOLVER.WARMUP_ITERS, then resume from it")
        if not os.path.isdir(self.save_dir):  # remote path managers: no rename to rely on
            return super().save(name, **kwargs)
        data = {"model": state}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    # ------------------------------------------------------------------------------ loading

    def resume_or_load(self, path: str, *, resume: bool = True):
        self._resuming = bool(resume and self.has_checkpoint())
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._resuming = False

    def load(self, path: str, checkpointables: Optional[List[str]] = None):
        if not path:
            return super().load(path, checkpointables)
        self._source = (f"resume checkpoint {path}" if self._resuming
                        else f"{self.weights_key} {path}")
        if path.endswith(".pkl"):  # before fetching anything
            check_pickle_source(self._source, path)
        if not os.path.isfile(path):
            try:
                local = self.path_manager.get_local_path(path)
            except Exception as e:  # no network, unknown catalog name, HTTP error, ...
                raise CheckpointError(f"{self._source}: cannot be fetched "
                                      f"({one_line(e, brief=True)}); "
                                      "download it and pass the local path") from None
            if not os.path.isfile(local):
                raise CheckpointError(f"{self._source}: {self._missing_hint()}")
        return super().load(path, checkpointables)

    def _missing_hint(self) -> str:
        if self._resuming:
            pointer = os.path.join(self.save_dir, "last_checkpoint")
            return (f"no such file, but {pointer} names it; restore the file, or point "
                    f"{pointer} at another checkpoint of this run")
        return ("no such file; expected a checkpoint file (.pth, .pkl) or a model-zoo name "
                "(detectron2://...)")

    def _load_file(self, filename: str):
        source = self._source or filename
        if filename.endswith(".pkl"):  # load() checked where it comes from
            warn_unpickling(source, "a .pkl file")
            try:
                return super()._load_file(filename)
            except Exception as e:
                raise CheckpointError(f"{source}: not a readable Detectron / Caffe2 pickle "
                                      f"({one_line(e, brief=True)})") from None
        data = load_weights_file(filename, source)  # torch.save files, .safetensors
        if filename.endswith(".pyth"):  # pycls, as DetectionCheckpointer reads it
            if not isinstance(data, Mapping) or not isinstance(data.get("model_state"), Mapping):
                raise CheckpointError(f"{source}: a .pyth file is read as a pycls checkpoint "
                                      "and needs a 'model_state' dict")
            state = {k: v for k, v in data["model_state"].items()
                     if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{source}: holds a {type(data).__name__}; expected a state "
                                  "dict or a detectron2 checkpoint {'model': state dict, ...}")
        if "model" not in data and bit_weights.is_timm_resnetv2(data):
            return bit_weights.timm_checkpoint(data, source)
        return dict(data) if "model" in data else {"model": dict(data)}

    def _load_model(self, checkpoint):
        source = self._source or "checkpoint"
        weights = checkpoint.get("model")
        _check_state_dict(weights, source)
        checkpoint = bit_weights.prepare_checkpoint(checkpoint, self.model, source)
        model_state = self.model.state_dict()
        if checkpoint.get("matching_heuristics", False):  # align names first, as detectron2 does
            self._convert_ndarray_to_tensor(weights)
            checkpoint["model"] = align_and_update_state_dicts(
                model_state, weights, c2_conversion=checkpoint.get("__author__") == "Caffe2")
            checkpoint["matching_heuristics"] = False
        shapes = _shapes(checkpoint["model"])
        incompatible = super()._load_model(checkpoint)
        model_shapes = {k: tuple(v.shape) for k, v in model_state.items()}
        incompatible = _pair_renamed_mismatches(incompatible, shapes, model_shapes)
        loaded = sum(1 for k, s in shapes.items() if model_shapes.get(k) == s)
        if (self._resuming or self.strict) and (incompatible.missing_keys
                                                or incompatible.unexpected_keys
                                                or incompatible.incorrect_shapes):
            hint = ("resume with the config it was trained with, or train into a new OUTPUT_DIR"
                    if self._resuming else "pass the config it was trained with")
            raise CheckpointError(
                f"{source}: was saved from a model of another shape than this config builds "
                f"({_describe(incompatible)}); {hint}")
        if incompatible.incorrect_shapes and not self.skip_mismatched:
            raise CheckpointError(
                f"{source}: {_describe_mismatch(incompatible.incorrect_shapes)}; if those layers "
                f"should start from their initialization instead (e.g. another NUM_CLASSES), set "
                f"MODEL.SKIP_MISMATCHED_WEIGHTS True")
        if shapes and loaded == 0:
            raise CheckpointError(
                f"{source}: none of its {len(shapes)} tensors fits the model (another "
                f"architecture?): {_describe(incompatible)}; expected weights of this model or of "
                f"a backbone it contains (torchvision / timm ResNets: convert them with "
                f"tools/convert_weights.py)")
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        source = self._source or "checkpoint"
        if incompatible.incorrect_shapes:
            self.logger.warning("%s: skipped (MODEL.SKIP_MISMATCHED_WEIGHTS) %s", source,
                                _describe_mismatch(incompatible.incorrect_shapes))
        if incompatible.missing_keys:
            self.logger.warning("%s: model tensors not in the file, left at their "
                                "initialization: %s", source,
                                summarize_keys(incompatible.missing_keys))
        if incompatible.unexpected_keys:
            self.logger.warning("%s: tensors in the file that the model does not use: %s",
                                source, summarize_keys(incompatible.unexpected_keys))


def _check_state_dict(weights, source: str) -> None:
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{source}: its 'model' entry is a {type(weights).__name__}; "
                              "expected a state dict (name -> tensor)")
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, (torch.Tensor, np.ndarray)):
            raise CheckpointError(f"{source}: state dict entry {key!r} is a "
                                  f"{type(value).__name__}; expected tensors or numpy arrays")


def _shapes(weights: Mapping) -> dict:
    """Key -> shape, without a DataParallel 'module.' prefix (fvcore strips it when loading)."""
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    if shapes and all(k.startswith("module.") for k in shapes):
        shapes = {k[len("module."):]: s for k, s in shapes.items()}
    return shapes


def _pair_renamed_mismatches(incompatible, shapes: dict, model_shapes: dict):
    """Each shape mismatch once: fvcore lists same-name ones as mismatched *and* missing; name-
    matched loading (Caffe2, converted weights) as an unexpected key plus a missing key ending
    with it."""
    mismatched: List[Tuple[str, tuple, tuple]] = [
        (k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes]
    skipped = {k for k, _, _ in mismatched}  # fvcore drops them, so they also show as missing
    missing = [k for k in incompatible.missing_keys if k not in skipped]
    unexpected = list(incompatible.unexpected_keys)
    for key in list(unexpected):
        owners = [m for m in missing if m.endswith("." + key)]
        if len(owners) == 1 and key in shapes and shapes[key] != model_shapes.get(owners[0]):
            mismatched.append((owners[0], shapes[key], model_shapes[owners[0]]))
            missing.remove(owners[0])
            unexpected.remove(key)
    return incompatible._replace(missing_keys=missing, unexpected_keys=unexpected,
                                 incorrect_shapes=mismatched)


def _describe_mismatch(mismatched: Iterable[Tuple[str, tuple, tuple]]) -> str:
    mismatched = list(mismatched)
    shown = ", ".join(f"{k} is {tuple(a)} in the file but {tuple(b)} in the model"
                      for k, a, b in mismatched[:_SHOWN])
    more = f" (+{len(mismatched) - _SHOWN} more)" if len(mismatched) > _SHOWN else ""
    count = "1 tensor has" if len(mismatched) == 1 else f"{len(mismatched)} tensors have"
    return f"{count} another shape: {shown}{more}"


def _describe(incompatible) -> str:
    parts = []
    if incompatible.incorrect_shapes:
        parts.append(_describe_mismatch(incompatible.incorrect_shapes))
    if incompatible.missing_keys:
        parts.append(f"missing {summarize_keys(incompatible.missing_keys)}")
    if incompatible.unexpected_keys:
        parts.append(f"unexpected {summarize_keys(incompatible.unexpected_keys)}")
    return "; ".join(parts)
