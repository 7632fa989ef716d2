"""The trained eager model to export: built from the config, its checkpoint loaded strictly, and
refused when the config's norms differ from the config.yaml training saved beside it (a checkpoint
cannot tell GN from LN or GN+WS) or when it is no RetinaNet; the config's score thresholds
attached."""
import logging
import os
from typing import Optional

from torch import nn

from detectron2.modeling.meta_arch import RetinaNet

from ..checkpoint import AtomicCheckpointer
from ..config.front import (build_config_model, component_specs, is_lazy, load_saved_config,
                            register_config_datasets, weights_key)
from ..engine.inference import attach_cfg_thresholds, thresholds_file
from ..modeling.score_thresholds import ScoreThresholds
from ..utils.errors import one_line
from .formats import ExportError
from .settings import settings

logger = logging.getLogger(__name__)


def check_trained_config(cfg, weights: str) -> None:
    """A checkpoint records shapes, not norm kinds (GN with any group count, LN and IN, with or
    without WS, have the same tensors): where training left its config.yaml beside the
    checkpoint, every component's norm and WS must be the ones this config builds."""
    trained = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml")
    if not os.path.isfile(trained):
        return
    try:
        theirs = component_specs(load_saved_config(trained, is_lazy(cfg)))
    except Exception as e:  # noqa: BLE001  another kind of config, or unreadable: not compared
        logger.warning("%s: not compared with the config (%s)", trained, one_line(e))
        return
    ours = component_specs(cfg)
    differ = [c for c in ours if ours[c] != theirs.get(c)]
    if differ:
        raise ExportError(
            f"checkpoint {weights} was trained with {trained} ("
            + ", ".join(f"{c}={spec_text(theirs.get(c))}" for c in differ)
            + "), but this config builds " + ", ".join(f"{c}={spec_text(ours[c])}"
                                                       for c in differ)
            + "; pass the config it was trained with")


def spec_text(spec) -> str:
    """'GN G=32', 'GN C/G=16+WS(timm)', 'none': what a component's ConvNormSpec builds."""
    if spec is None:
        return "?"
    norm = spec.norm
    text = norm.type or "none"
    if norm.type == "GN":
        text += (f" C/G={norm.channels_per_group}" if norm.channels_per_group
                 else f" G={norm.num_groups or 32}")
    if norm.type and norm.eps != 1e-5:
        text += f" eps={norm.eps:g}"
    if spec.ws:
        text += f"+WS({spec.ws.style})"
    return text


def load_trained_model(cfg) -> nn.Module:
    """The eager model the config builds, in eval mode, with its weights (MODEL.WEIGHTS /
    train.init_checkpoint) loaded strictly: a missing file, tensors of another shape, or missing /
    unexpected tensors end in one line."""
    weights = settings(cfg).weights
    check_trained_config(cfg, weights)
    model = build_config_model(cfg)
    checkpointer = AtomicCheckpointer(model, strict=True)
    checkpointer.weights_key = weights_key(cfg)  # messages name the key the user set
    checkpointer.load(weights)
    attach_config_thresholds(model, cfg)
    return model.eval()


def attach_config_thresholds(model: nn.Module, cfg) -> Optional[ScoreThresholds]:
    """The config's per-class score thresholds (MODEL.SCORE_THRESHOLDS_FILE /
    train.score_thresholds_file) attached to the eager model, so that the trace carries them
    and the check compares thresholded detections; the config's datasets are registered for
    the class names the file is matched to. None when the config names no file."""
    if not thresholds_file(cfg):
        return None
    register_config_datasets(cfg)
    return attach_cfg_thresholds(model, cfg)


def check_supported(model: nn.Module) -> None:
    """Only RetinaNet models are exported: R-CNN's ROI heads and mask pasting are not wired."""
    if not isinstance(model, RetinaNet):
        raise ExportError(f"MODEL.META_ARCHITECTURE {type(model).__name__}: export supports "
                          f"RetinaNet models (GNRetinaNet, RetinaNet) for now")
