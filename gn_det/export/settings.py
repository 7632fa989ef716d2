"""What the export reads from the training config, the same for YAML and LazyConfig (the test
size, input format, score threshold, ...), and the config to export, loaded on CPU."""
import dataclasses
from typing import Sequence, Tuple

from detectron2.config import instantiate
from detectron2.data import transforms as T

from ..config.front import is_lazy, load_config, weights, weights_key
from ..config.lazy import call_argument
from .formats import ExportError


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What the export reads from the training config, the same for YAML and LazyConfig."""

    weights: str
    min_size_test: int
    max_size_test: int
    input_format: str
    score_thresh: float
    detections_per_image: int
    test_datasets: Tuple[str, ...]


def settings(cfg) -> ExportSettings:
    """The export's settings from a YAML config (MODEL.WEIGHTS, INPUT.*_SIZE_TEST, ...) or a
    LazyConfig (train.init_checkpoint, the test mapper's ResizeShortestEdge, model.*)."""
    if not is_lazy(cfg):
        return ExportSettings(weights(cfg), cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                              cfg.INPUT.FORMAT, cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
                              cfg.TEST.DETECTIONS_PER_IMAGE, tuple(cfg.DATASETS.TEST))
    resize = [a for a in instantiate(cfg.dataloader.test.mapper.augmentations)
              if isinstance(a, T.ResizeShortestEdge)]
    if len(resize) != 1:
        raise ExportError("dataloader.test.mapper.augmentations: expected one "
                          f"ResizeShortestEdge (the test size), found {len(resize)}")
    names = cfg.dataloader.test.dataset.names
    return ExportSettings(weights(cfg), int(resize[0].short_edge_length[0]),
                          int(resize[0].max_size), str(call_argument(cfg.model, "input_format")),
                          float(call_argument(cfg.model, "test_score_thresh")),
                          int(call_argument(cfg.model, "max_detections_per_image")),
                          (names,) if isinstance(names, str) else tuple(names))


def load_export_config(config_file: str, opts: Sequence[str] = ()):
    """The config to export (YAML with opts KEY VALUE ..., or a LazyConfig .py with key=value
    ...), through gn_det.config's front, on CPU (the export and its check run there); an empty
    weights key ends in one line."""
    cfg = load_config(config_file, opts, device="cpu")
    if not settings(cfg).weights:
        key = weights_key(cfg)
        example = f"{key}{'=' if is_lazy(cfg) else ' '}output/run/model_final.pth"
        raise ExportError(f"{key} is empty: pass the trained checkpoint to export, e.g. "
                          f"{example}")
    return cfg
