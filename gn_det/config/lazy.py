"""LazyConfig (Python) configs for gn_det: load one with its `key=value` overrides checked, the
device resolved and gn_det components' norms validated (its COCO-format datasets are registered by
gn_det.data.register_datasets_from_lazy_cfg); each problem is one line naming the file or key.

A gn_det LazyConfig has detectron2's layout (configs/common in detectron2: `model`, `dataloader`,
`optimizer`, `lr_multiplier`, `train`) plus `datasets`, gn_det's DATASETS keys:

    datasets = dict(coco_format=[["mine_train", "ann/train.json", "img/train"], ...],
                    cache_dir="", check_images=True)

`train` also takes `accumulate_steps` (SOLVER.ACCUMULATE_STEPS), `skip_mismatched_weights`
(MODEL.SKIP_MISMATCHED_WEIGHTS), `precision` and `precision_fallback` (MODEL.PRECISION,
MODEL.PRECISION_FALLBACK), `ema` (MODEL.EMA: enabled, decay, warmup_power) and
`score_thresholds_file` (MODEL.SCORE_THRESHOLDS_FILE);
`dataloader.evaluator` is gn_det's PREvaluator.
"""
import inspect
import logging
import os
from typing import Dict, Sequence

import torch

from detectron2.config import LazyConfig

from ..layers import ConvNormSpec
from ..utils.errors import one_line
from .defaults import EMA_DEFAULTS

logger = logging.getLogger(__name__)

_MISSING = object()
# LazyConfig keys gn_det adds to detectron2's common/train.py, with their defaults.
TRAIN_DEFAULTS = {"accumulate_steps": 1, "skip_mismatched_weights": False,
                  "precision": "auto", "precision_fallback": "fp32", "ema": dict(EMA_DEFAULTS),
                  "score_thresholds_file": ""}
DATASETS_DEFAULTS = {"coco_format": [], "cache_dir": "", "check_images": True}


def load_lazy_cfg(config_file: str, overrides: Sequence[str] = ()):
    """The LazyConfig in `config_file` (a .py or .yaml LazyConfig file) with `overrides` applied
    (each key must exist; `+key=value` adds one), gn_det's `train` / `datasets` defaults filled
    in, `train.device` cpu when CUDA is absent, and every gn_det component's norm / ws checked."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} does not exist")
    try:
        cfg = LazyConfig.load(config_file)
    except SyntaxError as e:  # detectron2 re-raises the parser's error without its position
        e = e.__cause__ if isinstance(e.__cause__, SyntaxError) else e
        raise ValueError(f"config file {config_file!r}: Python syntax error at line {e.lineno}: "
                         f"{e.msg}") from None
    except Exception as e:  # noqa: BLE001  whatever the config file's own code raises
        raise ValueError(f"config file {config_file!r}: cannot be loaded "
                         f"({_brief(e)})") from None
    for key, defaults in (("train", TRAIN_DEFAULTS), ("datasets", DATASETS_DEFAULTS)):
        if key not in cfg:
            cfg[key] = {}
        for name, value in defaults.items():
            if name not in cfg[key]:
                cfg[key][name] = value
    apply_overrides(cfg, overrides)
    device = str(cfg.train.get("device", "cuda"))
    if device != "cpu" and not torch.cuda.is_available():
        logger.info("CUDA is not available: train.device=%s -> cpu", device)
        cfg.train.device = "cpu"
    check_norms(cfg)
    return cfg


def _brief(exc: BaseException) -> str:
    return one_line(exc, brief=True)


def apply_overrides(cfg, overrides: Sequence[str]):
    """detectron2's LazyConfig.apply_overrides, after checking that each key exists (hydra's
    `+key=value` adds a key) and that a number or bool is not replaced by another type."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as e:  # noqa: BLE001  hydra's OverrideParseException and friends
        raise ValueError(f"overrides: cannot parse {' '.join(overrides)!r} ({_brief(e)}); "
                         f"expected key=value pairs, e.g. train.max_iter=100") from None
    for raw, o in zip(overrides, parsed):
        key = o.key_or_group
        if o.is_add():
            continue
        old = OmegaConf.select(cfg, key, default=_MISSING)
        if old is not _MISSING:
            _check_type(raw, key, old, o.value())
            continue
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        keys = set(node.keys()) if OmegaConf.is_dict(node) else set()
        params = _target_parameters(node) if OmegaConf.is_dict(node) else set()
        if name in params:  # an argument of the lazy call that the config leaves at its default
            continue
        where = f"under {parent}" if parent else "at the top level"
        raise KeyError(f"override {raw!r}: {key} is not a key of the config; keys {where}: "
                       f"{', '.join(sorted(map(str, keys | params))) or 'none'} "
                       f"(+{key}=... adds a new key)")
    return LazyConfig.apply_overrides(cfg, list(overrides))


def _target_signature(node):
    """The signature of the lazy call `node`'s `_target_`, or None where it has none."""
    target = node.get("_target_", None)
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        target = locate(target)
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _target_parameters(node) -> set:
    """The keyword arguments the lazy call `node` (its `_target_`) takes."""
    signature = _target_signature(node)
    if signature is None:
        return set()
    return {n for n, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}


def call_argument(node, name: str):
    """The value the lazy call `node` passes as `name`: set in the config, or else the default
    of its target's signature (KeyError when it has neither)."""
    if name in node:
        return node[name]
    signature = _target_signature(node)
    parameter = signature.parameters.get(name) if signature is not None else None
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise KeyError(f"{name}: not set in the config and {node.get('_target_')} has no default")
    return parameter.default


def _check_type(raw: str, key: str, old, new):
    numbers = (int, float)
    if isinstance(old, bool) and not isinstance(new, bool):
        raise ValueError(f"override {raw!r}: {key} is a bool ({old}); expected true or false")
    if isinstance(old, numbers) and not isinstance(old, bool) and (
            isinstance(new, bool) or not isinstance(new, numbers)):
        raise ValueError(f"override {raw!r}: {key} is a number ({old}); expected a number")


def _gn_det_nodes(node, path: str = ""):
    """(path, node) of every lazy call to a gn_det component in the config tree."""
    from omegaconf import OmegaConf

    if OmegaConf.is_dict(node):
        target = node.get("_target_", None)
        name = target if isinstance(target, str) else getattr(target, "__module__", "")
        if name.startswith("gn_det."):
            yield path, node
        for key in node.keys():
            yield from _gn_det_nodes(node[key], f"{path}.{key}" if path else str(key))
    elif OmegaConf.is_list(node):
        for i, item in enumerate(node):
            yield from _gn_det_nodes(item, f"{path}[{i}]")


def check_norms(cfg):
    """Every gn_det component's `norm` and `ws` resolve (gn_det.layers.ConvNormSpec), or a
    one-line error names the key, e.g. `model.backbone.bottom_up.norm`."""
    for path, node in _gn_det_nodes(cfg):
        if "norm" not in node and "ws" not in node:
            continue
        norm = node.get("norm", "")
        if callable(norm):  # a module factory, as detectron2's own LazyConfigs pass norms
            continue
        try:
            ConvNormSpec.of(norm, node.get("ws", False))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}.norm: {e}") from None


# Where each gn_det component sits in a LazyConfig model, by its MODEL.NORMS name.
LAZY_COMPONENTS = {"BACKBONE": "backbone.bottom_up", "FPN": "backbone", "RETINANET_HEAD": "head",
                   "BOX_HEAD": "roi_heads.box_head", "MASK_HEAD": "roi_heads.mask_head"}


def lazy_component_specs(cfg) -> Dict[str, ConvNormSpec]:
    """The norm + WS of each component a LazyConfig model sets them for, by MODEL.NORMS name
    (components whose node has no `norm`, or a callable one, are left out)."""
    from omegaconf import OmegaConf

    specs = {}
    for component, where in LAZY_COMPONENTS.items():
        node = OmegaConf.select(cfg.model, where, default=None)
        if node is not None and "norm" in node and not callable(node.norm):
            specs[component] = ConvNormSpec.of(node.norm, node.get("ws", False))
    return specs
