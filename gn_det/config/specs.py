"""The per-component norm spec read from a YAML config: one ConvNormSpec per component
(`component_spec`), validated, with errors naming the config key at fault.

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
FrozenBN, GN, naiveSyncBN, naiveSyncBN_N, LN), plus gn_det's LN_CHW (the GN paper's LN), IN, and
the other small-batch norms BRN (Batch Renormalization), FRN (with TLU) and EvoNormS0 (timm's):
see gn_det.layers.norm. NUM_GROUPS / CHANNELS_PER_GROUP: 0 = unset; a component that sets
either overrides the shared pair; both unset everywhere means 32 groups (EvoNormS0 is grouped the
same way). EPS: 0 = the component's own, else MODEL.NORMS.GN.EPS for GN / LN_CHW / IN, else the
layer's default.
"""
import logging
from typing import Dict

from detectron2.config import CfgNode as CN

from ..layers import GROUP_NORM_TYPES, ConvNormSpec, NormSpec, WSSpec, canonical_norm_type

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


def used_components(cfg: CN):
    """The components a YAML config's model is built from (a RetinaNet has no box or mask head,
    an R-CNN no RetinaNet head, and a mask head only with MODEL.MASK_ON)."""
    if "RetinaNet" in cfg.MODEL.META_ARCHITECTURE:
        return ["BACKBONE", "FPN", "RETINANET_HEAD"]
    return ["BACKBONE", "FPN", "BOX_HEAD"] + (["MASK_HEAD"] if cfg.MODEL.MASK_ON else [])


def describe_norms(cfg: CN) -> str:
    """One log line: 'BACKBONE=GN+WS FPN=GN RETINANET_HEAD=GN+WS BOX_HEAD=none MASK_HEAD=none'."""
    return " ".join(f"{c}={s.describe()}" for c, s in all_component_specs(cfg).items())
