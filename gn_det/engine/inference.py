"""The settings every inference path takes from the training config, for YAML and LazyConfig
alike: the precision (MODEL.PRECISION / train.precision) and the per-class score thresholds
(MODEL.SCORE_THRESHOLDS_FILE / train.score_thresholds_file), each logged in one line.

- Evaluation during training runs the training model under its precision's autocast, its weights
  untouched (evaluation_autocast); the thresholds are not applied there: that evaluation's AP and
  the thresholds.json it writes need every score.
- --eval-only prepares the loaded model for inference in the precision (channels_last, bf16 conv
  weights, autocast hooks) and attaches the thresholds (prepare_eval_model).
- The export reads the same two settings (gn_det.export).
"""
import dataclasses
import logging
from typing import List, Optional

from detectron2.data import MetadataCatalog
from torch import nn

from ..config.front import is_lazy
from ..evaluation.thresholds import ThresholdsError, read_thresholds
from ..modeling.score_thresholds import ScoreThresholds, attach_score_thresholds
from .precision import (Precision, log_precision, model_precision, precision_from_cfg,
                        precision_from_lazy_cfg, prepare_for_inference)

logger = logging.getLogger("detectron2")


def config_precision(cfg, log: bool = True) -> Precision:
    """The precision a YAML or LazyConfig config asks for (one log line when `log`)."""
    return (precision_from_lazy_cfg if is_lazy(cfg) else precision_from_cfg)(cfg, log=log)


def _log_path(precision: Precision, why: str) -> None:
    """log_precision's one line, saying which inference path took the precision."""
    reason = f"{why}; {precision.reason}" if precision.reason else why
    log_precision(dataclasses.replace(precision, reason=reason))


def evaluation_autocast(cfg, model: nn.Module):
    """The context evaluation runs `model` in: its precision's autocast (the precision it was
    prepared with, else the config's), logged in one line. Never changes the weights, so it
    suits a model that keeps training."""
    prepared = model_precision(model)
    precision = prepared or config_precision(cfg, log=False)
    if not getattr(getattr(model, "module", model), "_gn_det_inference_ready", False):
        _log_path(precision, "evaluation under autocast over the "
                             + ("training model's weights" if prepared else "model's weights"))
    return precision.autocast()


def thresholds_key(cfg) -> str:
    return "train.score_thresholds_file" if is_lazy(cfg) else "MODEL.SCORE_THRESHOLDS_FILE"


def thresholds_file(cfg) -> str:
    """The thresholds.json the config names ('' for none)."""
    if is_lazy(cfg):
        return str(cfg.train.get("score_thresholds_file", "") or "")
    return str(cfg.MODEL.SCORE_THRESHOLDS_FILE or "")


def _dataset_names(cfg) -> List[str]:
    """The config's test datasets, then its training datasets: where the model's class names
    (thing_classes) are read."""
    if not is_lazy(cfg):
        return [*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN]
    names = []
    for split in ("test", "train"):
        value = cfg.dataloader.get(split, {}).get("dataset", {}).get("names", None)
        if value is not None:
            names += [value] if isinstance(value, str) else list(value)
    return names


def model_class_names(cfg) -> List[str]:
    """The model's class names: thing_classes of the first test (else training) dataset that
    has them; one line when none has."""
    names = _dataset_names(cfg)
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes:
            return list(classes)
    raise ThresholdsError(f"{thresholds_key(cfg)}: the class names the thresholds are matched to "
                          f"come from the test or training dataset's thing_classes, and "
                          f"{', '.join(map(repr, names)) or 'no dataset'} has none; register the "
                          f"dataset (DATASETS.COCO_FORMAT / datasets.coco_format)")


def attach_cfg_thresholds(model: nn.Module, cfg) -> Optional[ScoreThresholds]:
    """Attach the config's thresholds file to `model` (None when the config names none), logged
    in one line; ThresholdsError (one line naming the file and field) for a bad file or a class
    the model lacks."""
    path = thresholds_file(cfg)
    if not path:
        return None
    thresholds = read_thresholds(path)
    hook = attach_score_thresholds(model, thresholds, model_class_names(cfg))
    logger.info("gn_det score thresholds (%s): %s", thresholds_key(cfg), hook.describe())
    return hook


def prepare_eval_model(model: nn.Module, cfg) -> nn.Module:
    """--eval-only: the loaded model prepared for inference in the config's precision (logged in
    one line) with the config's score thresholds attached. Returns `model`."""
    precision = config_precision(cfg, log=False)
    _log_path(precision, "--eval-only: the model prepared for inference"
                         + (" (bf16 conv weights, autocast hooks)" if precision.mixed else ""))
    prepare_for_inference(getattr(model, "module", model), precision)
    getattr(model, "module", model)._gn_det_inference_ready = True
    attach_cfg_thresholds(model, cfg)
    return model
