"""YAML configs: `load_cfg` reads a config file and command-line opts into detectron2's config
with gn_det's keys, validated (safe YAML only, every component's norm resolved, the device
resolved); one-line errors name the file or key."""
import logging
import os
from typing import Sequence

import torch
import yaml

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .defaults import add_gn_det_config
from .specs import all_component_specs

logger = logging.getLogger(__name__)


def merge_config_file(cfg: CN, path: str) -> CN:
    """cfg.merge_from_file with safe YAML only (python tags refused, never executed) and
    one-line errors naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    try:
        cfg.merge_from_file(path, allow_unsafe=False)
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"config file {path!r}: not valid safe YAML ({detail}); python tags "
                         f"are refused, configs load with safe YAML only") from None
    except KeyError as e:
        raise KeyError(f"config file {path!r}: {e.args[0] if e.args else e}; see "
                       f"`detectron2.config.get_cfg()` plus gn_det's MODEL.NORMS / SOLVER keys "
                       f"for valid keys") from None
    except AssertionError as e:  # detectron2 asserts on missing _BASE_ files
        raise FileNotFoundError(f"config file {path!r}: {e}") from None
    except OSError as e:  # a _BASE_ file that is missing or unreadable
        raise FileNotFoundError(f"config file {path!r}: cannot read {e.filename or path!r} "
                                f"({e.strerror or e}); _BASE_ paths are relative to the file "
                                f"that names them") from None
    return cfg


def load_cfg(config_file: str = "", opts: Sequence[str] = (), resolve_device: bool = True) -> CN:
    """detectron2's config with gn_det's keys, merged from a YAML file (safe YAML only) and
    `opts` (trailing KEY VALUE pairs), every component's norm validated; one-line errors name the
    file or key. `resolve_device`: MODEL.DEVICE becomes cpu when CUDA is absent, where SyncBN is
    refused. Datasets are a separate step (gn_det.data.register_datasets_from_cfg), which the
    CLIs take next."""
    cfg = add_gn_det_config(get_cfg())
    if config_file:
        merge_config_file(cfg, config_file)
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as e:
        raise KeyError(f"command-line opts: {e.args[0] if e.args else e}") from None
    specs = all_component_specs(cfg)
    if not resolve_device:
        return cfg
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu":
        logger.info("CUDA is not available: MODEL.DEVICE=%s -> cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    sync = [c for c, s in specs.items() if s.norm.type == "SyncBN"]
    if sync and cfg.MODEL.DEVICE == "cpu":
        raise ValueError(
            f"MODEL.NORMS {', '.join(sync)} use SyncBN, which needs GPUs (NCCL); on CPU use GN "
            f"(needs no synchronization across devices, which is the point) or BN")
    return cfg
