"""add_gn_det_config(cfg), the per-component norm spec read from it, and `load_cfg`, which reads a
config file and command-line opts into a validated config.

One node, MODEL.NORMS, with a sub-node per component. YAML → add_gn_det_config → one
ConvNormSpec per component (`component_spec`) → builders → modules; no module reads another
component's settings.

    MODEL:
      NORMS:
        GN: {NUM_GROUPS: 0, CHANNELS_PER_GROUP: 0, EPS: 1.0e-5}   # shared GN settings
        WS: {STYLE: "timm", EPS: 0.0}                             # WS convention (0 = its eps)
        BACKBONE: {TYPE: "GN", WS: True}
        FPN: {TYPE: "GN"}
        RETINANET_HEAD: {TYPE: "GN", WS: True, NUM_GROUPS: 16}    # per-component override

TYPE "" inherits detectron2's own key for that component (so stock configs work unchanged);
TYPE "none" means no norm. Norm names mean what detectron2's get_norm means (BN, SyncBN, nnSyncBN,
FrozenBN, GN, naiveSyncBN, naiveSyncBN_N, LN), plus gn_det's LN_CHW (the GN paper's LN) and IN:
see gn_det.layers.norm. NUM_GROUPS / CHANNELS_PER_GROUP: 0 = unset; a component that sets
either overrides the shared pair; both unset everywhere means 32 groups. EPS: 0 = the
component's own, else MODEL.NORMS.GN.EPS for GN / LN_CHW / IN, else the layer's default.
"""
import logging
import os
from typing import Dict, Sequence

import torch
import yaml

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .layers import GROUP_NORM_TYPES, ConvNormSpec, NormSpec, WSSpec, canonical_norm_type

logger = logging.getLogger(__name__)

# component -> the detectron2 key it inherits from when its TYPE is "".
COMPONENTS: Dict[str, str] = {
    "BACKBONE": "MODEL.RESNETS.NORM",
    "FPN": "MODEL.FPN.NORM",
    "RETINANET_HEAD": "MODEL.RETINANET.NORM",
    "BOX_HEAD": "MODEL.ROI_BOX_HEAD.NORM",
    "MASK_HEAD": "MODEL.ROI_MASK_HEAD.NORM",
}
_WARNED_WS_WITHOUT_NORM = set()


def add_gn_det_config(cfg: CN) -> CN:
    """Add gn_det's keys to a detectron2 config (in place; also returned)."""
    _add_norm_config(cfg)
    _add_train_config(cfg)
    _add_data_config(cfg)
    _add_eval_config(cfg)
    _add_bit_config(cfg)
    return cfg


def _add_bit_config(cfg: CN):
    # BiT ResNetV2 backbones (gn_det.modeling.bit: build_gn_bit_backbone, build_gn_bit_fpn_backbone,
    # build_gn_retinanet_bit_fpn_backbone); their norm + WS: MODEL.NORMS.BACKBONE.
    bit = cfg.MODEL.BIT = CN()
    bit.DEPTH = 50  # 50, 101, 152 (timm's resnetv2_<DEPTH>x<WIDTH_FACTOR>_bit), or 0 = custom
    bit.WIDTH_FACTOR = 1  # timm's BiT: 50x1, 50x3, 101x1, 101x3, 152x2, 152x4
    bit.BLOCKS_PER_STAGE = []  # DEPTH 0 only: blocks in res2-res5, e.g. [1, 1, 1, 1]
    bit.STEM_OUT_CHANNELS = 0  # 0 = 64 x WIDTH_FACTOR
    bit.RES2_OUT_CHANNELS = 0  # 0 = 256 x WIDTH_FACTOR; doubles per stage
    bit.STEM_TYPE = "fixed"  # BiT's: zero pad 1 + 3x3/2 max-pool; "" = max-pool padding 1
    bit.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    bit.FINAL_NORM = True  # timm's final norm + ReLU applied to res5 (its forward_features)
    bit.WS_EPS = 1e-8  # BiT's StdConv2d eps when MODEL.NORMS.BACKBONE.WS; 0 = MODEL.NORMS.WS.EPS


def _add_data_config(cfg: CN):
    # COCO-format datasets registered (after validation) by gn_det.data.register_datasets_from_cfg:
    # [[name, annotation_json, image_root], ...]; DATASETS.TRAIN / TEST then use the names.
    cfg.DATASETS.COCO_FORMAT = []
    # Check every image file at registration (exists, 8-bit, size as in the JSON, decodes fully),
    # verdicts cached per file in CACHE_DIR; off: a file that fails later is still named.
    cfg.DATASETS.CHECK_IMAGES = True
    # Where cleaned copies of annotation files and image verdicts go; "" = OUTPUT_DIR/dataset_cache.
    cfg.DATASETS.CACHE_DIR = ""


def _add_eval_config(cfg: CN):
    # Precision / recall / F1 of gn_det.evaluation.PREvaluator (build_pr_evaluator): at each IoU
    # (the first is the main one: best-F1 thresholds, PR curves) and each score threshold (a
    # detection counts when score >= threshold); MAIN_SCORE is the one of the logged table.
    cfg.TEST.PR = CN()
    cfg.TEST.PR.IOU_THRESHOLDS = [0.5, 0.75]
    cfg.TEST.PR.SCORE_THRESHOLDS = [0.05, 0.3, 0.5, 0.7]
    cfg.TEST.PR.MAIN_SCORE = 0.5


def _add_train_config(cfg: CN):
    # Micro-steps per optimizer step: effective batch = IMS_PER_BATCH * ACCUMULATE_STEPS.
    cfg.SOLVER.ACCUMULATE_STEPS = 1
    # Weight decay of GN/LN_CHW/IN (nn.GroupNorm) affine parameters (Detectron's WEIGHT_DECAY_GN).
    cfg.SOLVER.WEIGHT_DECAY_GN = 0.0
    # "SGD" (detectron2's, with SOLVER.MOMENTUM / NESTEROV) or "AdamW" (decoupled weight decay;
    # takes a ~10-100x smaller BASE_LR than SGD).
    cfg.SOLVER.OPTIMIZER = "SGD"
    # MODEL.WEIGHTS tensors whose shape differs from the model's (e.g. a classifier trained for
    # another NUM_CLASSES): False = refuse the file, naming the keys; True = leave those layers at
    # their initialization, with a warning naming them. Resuming never skips.
    cfg.MODEL.SKIP_MISMATCHED_WEIGHTS = False
    # gn_det backbones: channels_last (NHWC) activations on CPU from the backbone on
    # (gn_det.modeling.memory_format; measured in docs/PERFORMANCE.md).
    cfg.MODEL.CHANNELS_LAST = False


def _add_norm_config(cfg: CN):
    norms = cfg.MODEL.NORMS = CN()
    norms.GN = CN({"NUM_GROUPS": 0, "CHANNELS_PER_GROUP": 0, "EPS": 1e-5})
    norms.WS = CN({"STYLE": "timm", "EPS": 0.0})
    for component in COMPONENTS:
        norms[component] = CN({"TYPE": "", "WS": False, "NUM_GROUPS": 0,
                               "CHANNELS_PER_GROUP": 0, "EPS": 0.0})


def _lookup(cfg: CN, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def component_spec(cfg: CN, component: str) -> ConvNormSpec:
    """The resolved (norm, WS) of one component; errors name the config key at fault."""
    if component not in COMPONENTS:
        raise KeyError(f"unknown gn_det component {component!r}; valid: {', '.join(COMPONENTS)}")
    key = f"MODEL.NORMS.{component}"
    node, shared = cfg.MODEL.NORMS[component], cfg.MODEL.NORMS.GN
    source = (f"{key}.TYPE" if node.TYPE != ""
              else f"{COMPONENTS[component]} (inherited by {key}.TYPE)")
    raw_type = node.TYPE if node.TYPE != "" else _lookup(cfg, COMPONENTS[component])
    try:
        norm_type = canonical_norm_type(raw_type)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if node.NUM_GROUPS or node.CHANNELS_PER_GROUP:
        groups, per_group, where = node.NUM_GROUPS, node.CHANNELS_PER_GROUP, key
    else:
        groups, per_group, where = shared.NUM_GROUPS, shared.CHANNELS_PER_GROUP, "MODEL.NORMS.GN"
    try:
        eps = node.EPS or (shared.EPS if norm_type in GROUP_NORM_TYPES else None)
        norm = NormSpec(norm_type, groups, per_group, eps)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    try:
        ws = WSSpec(bool(node.WS), cfg.MODEL.NORMS.WS.STYLE, cfg.MODEL.NORMS.WS.EPS)
    except ValueError as e:
        raise ValueError(f"MODEL.NORMS.WS: {e}") from None
    if ws and not norm and component not in _WARNED_WS_WITHOUT_NORM:
        _WARNED_WS_WITHOUT_NORM.add(component)
        logger.warning("%s.WS is on but the component has no norm: WS without GN/BN after it "
                       "is allowed, but rarely what you want", key)
    return ConvNormSpec(norm, ws)


def all_component_specs(cfg: CN) -> Dict[str, ConvNormSpec]:
    """Resolve every component at once: validates a whole config before anything is built."""
    return {component: component_spec(cfg, component) for component in COMPONENTS}


def describe_norms(cfg: CN) -> str:
    """One log line: 'BACKBONE=GN+WS FPN=GN RETINANET_HEAD=GN+WS BOX_HEAD=none MASK_HEAD=none'."""
    return " ".join(f"{c}={s.describe()}" for c, s in all_component_specs(cfg).items())


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
