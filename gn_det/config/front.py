"""Either kind of config through one front: whether a config is a LazyConfig or a YAML CfgNode,
loading a config file of either kind (with its command-line opts), registering its datasets,
reading each component's norm spec, the model it builds, and its output folder."""
from typing import Dict, Optional, Sequence

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.modeling import build_model

from ..data import register_datasets_from_cfg, register_datasets_from_lazy_cfg
from ..layers import ConvNormSpec
from .lazy import lazy_component_specs, load_lazy_cfg
from .specs import component_spec, used_components
from .yaml_config import load_cfg


def is_lazy(cfg) -> bool:
    """A LazyConfig (omegaconf) rather than a YAML CfgNode."""
    return not isinstance(cfg, CfgNode)


def is_lazy_file(path: str) -> bool:
    """A LazyConfig file (.py) rather than a YAML config (the YAML a LazyConfig run saves is
    read with `lazy=True` by `load_saved_config`)."""
    return str(path).endswith(".py")


def load_config(config_file: str, opts: Sequence[str] = (), device: str = "",
                weights: Optional[str] = None, resolve_device: bool = True):
    """A YAML config (load_cfg; opts: KEY VALUE ...) or a LazyConfig .py (load_lazy_cfg; opts:
    key=value ...), validated. `device` ("cpu") forces the device and `weights` the weights file
    (weights_key) of either kind; `resolve_device` False: a YAML config keeps its device and
    SyncBN (to build a model that is not run)."""
    if is_lazy_file(config_file):
        extra = ([f"train.device={device}"] if device else []) + \
            ([f"train.init_checkpoint='{weights}'"] if weights is not None else [])
        return load_lazy_cfg(config_file, [*extra, *opts])
    extra = (["MODEL.DEVICE", device] if device else []) + \
        (["MODEL.WEIGHTS", weights] if weights is not None else [])
    return load_cfg(config_file, [*extra, *opts], resolve_device=resolve_device)


def load_saved_config(path: str, lazy: bool):
    """The config.yaml a training run wrote to its output folder (train_net: a YAML config;
    lazy_train_net: LazyConfig.save's YAML), as it was (no device resolved)."""
    if lazy:
        return LazyConfig.load(path)
    return load_cfg(path, resolve_device=False)


def register_config_datasets(cfg):
    """Register the COCO-format datasets a config of either kind names; returns their names."""
    if is_lazy(cfg):
        return register_datasets_from_lazy_cfg(cfg)
    return register_datasets_from_cfg(cfg)


def component_specs(cfg) -> Dict[str, ConvNormSpec]:
    """The norm + WS (ConvNormSpec) of each component the model is built from, by MODEL.NORMS
    name, from either kind."""
    if is_lazy(cfg):
        return lazy_component_specs(cfg)
    return {c: component_spec(cfg, c) for c in used_components(cfg)}


def describe_specs(cfg) -> str:
    """'BACKBONE=GN+WS FPN=GN ...' for a config of either kind."""
    return " ".join(f"{c}={s.describe()}" for c, s in component_specs(cfg).items())


def build_config_model(cfg):
    """The model a config of either kind builds (detectron2's build_model / instantiate)."""
    return instantiate(cfg.model) if is_lazy(cfg) else build_model(cfg)


def output_dir(cfg) -> str:
    """OUTPUT_DIR of a YAML config, train.output_dir of a LazyConfig."""
    return cfg.train.output_dir if is_lazy(cfg) else cfg.OUTPUT_DIR


def weights_key(cfg) -> str:
    """The key that names the weights to start from: MODEL.WEIGHTS or train.init_checkpoint."""
    return "train.init_checkpoint" if is_lazy(cfg) else "MODEL.WEIGHTS"


def weights(cfg) -> str:
    """The weights file a config of either kind names (weights_key)."""
    return str(cfg.train.init_checkpoint) if is_lazy(cfg) else cfg.MODEL.WEIGHTS
