"""gn_det's shipped configs (the repository's configs/, installed with the package as
`gn_det.model_zoo.configs`) and the named norm presets that they define.

The norm presets exist once, as YAML files under configs/RetinaNet/; the small-batch study
(gn_det.study.grid) and the end-to-end benchmark (gn_det.benchmark.e2e) read them from there.
"""
import dataclasses
import importlib.util
from pathlib import Path
from typing import Dict

_CONFIGS_PACKAGE = __name__ + ".configs"
_CHECKOUT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESET_COMPONENTS = ("BACKBONE", "FPN", "RETINANET_HEAD")


def config_dir() -> Path:
    """The configs folder: the configs/ of the checkout this gn_det was imported from (editable
    installs and uninstalled checkouts), else the package data a wheel installed."""
    if (_CHECKOUT_CONFIGS / "Base-RetinaNet-GN.yaml").is_file():
        return _CHECKOUT_CONFIGS
    spec = importlib.util.find_spec(_CONFIGS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    raise FileNotFoundError(f"gn_det's configs are not installed ({_CONFIGS_PACKAGE}) and "
                            f"{_CHECKOUT_CONFIGS} does not exist; reinstall gn_det")


def get_config_file(relpath: str) -> str:
    """The path of a shipped config, e.g. 'RetinaNet/retinanet_R_50_FPN_1x_gn_all.yaml'."""
    path = config_dir() / relpath
    if not path.is_file():
        shipped = sorted(str(p.relative_to(config_dir())) for p in config_dir().rglob("*.yaml"))
        raise FileNotFoundError(f"gn_det config {relpath!r} does not exist; shipped: "
                                f"{', '.join(shipped)}")
    return str(path)


@dataclasses.dataclass(frozen=True)
class NormPreset:
    """A named norm setting of the RetinaNet components, defined by its YAML preset file."""

    config: str       # relative to configs/
    description: str


NORM_PRESETS: Dict[str, NormPreset] = {
    "frozenbn": NormPreset(
        "RetinaNet/retinanet_R_50_FPN_1x.yaml",
        "FrozenBN baseline: detectron2's default norms (FrozenBN backbone, no norm in FPN and "
        "head); trained from scratch, FrozenBN is an identity affine (weight 1, bias 0, mean 0, "
        "var 1), i.e. no normalization at all"),
    "bn_all": NormPreset(
        "RetinaNet/retinanet_R_50_FPN_1x_bn_all.yaml",
        "BN in backbone, FPN and head (per-level statistics in the head), statistics of each "
        "GPU's own images"),
    "gn_fpn_head": NormPreset(
        "RetinaNet/retinanet_R_50_FPN_1x_gn_fpn_head.yaml",
        "GN in FPN and head, FrozenBN backbone (Detectron's GN-head setup; from scratch the "
        "backbone is unnormalized)"),
    "gn_all": NormPreset("RetinaNet/retinanet_R_50_FPN_1x_gn_all.yaml",
                         "GN in backbone, FPN and head"),
    "gnws_all": NormPreset("RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml",
                           "GN + Weight Standardization in backbone, FPN and head"),
    "syncbn_all": NormPreset(
        "RetinaNet/retinanet_R_50_FPN_1x_syncbn_all.yaml",
        "SyncBN in backbone, FPN and head: statistics over all GPUs' images (needs GPUs)"),
}


def preset_norm_opts(name: str):
    """Config opts that set each RetinaNet component's norm TYPE and WS as preset `name`'s YAML
    file resolves them (detectron2 keys it inherits included), to apply over another config."""
    from ..config import all_component_specs, load_cfg

    if name not in NORM_PRESETS:
        raise KeyError(f"unknown norm preset {name!r}; valid: {', '.join(NORM_PRESETS)}")
    specs = all_component_specs(load_cfg(get_config_file(NORM_PRESETS[name].config),
                                         resolve_device=False))
    opts = []
    for component in PRESET_COMPONENTS:
        spec = specs[component]
        opts += [f"MODEL.NORMS.{component}.TYPE", spec.norm.type or "none",
                 f"MODEL.NORMS.{component}.WS", str(bool(spec.ws))]
    return tuple(opts)
