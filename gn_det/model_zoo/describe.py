"""What each shipped config builds: its meta-architecture, the norm (+ WS) of every component and
its parameter counts, read from the model built on CPU with random weights (nothing downloaded).
YAML presets and LazyConfig presets alike; `tools/describe_configs.py` prints the table in
docs/CONFIGS.md."""
import contextlib
from pathlib import Path
from typing import Dict, List, Sequence

import torch.distributed as dist

from ..config import build_config_model, component_specs, load_config
from . import config_dir

HEADER = "| config | meta-architecture | norms (+WS) per component | parameters | trainable |"


def preset_configs(root: Path = None) -> List[Path]:
    """Every runnable config under `root` (default: the shipped configs): YAML presets (the
    Base-*.yaml files are only inherited) and LazyConfig presets (lazy/**.py but lazy/common/)."""
    root = Path(root or config_dir())
    yaml = [p for p in root.rglob("*.yaml") if not p.name.startswith("Base-")]
    lazy = [p for p in (root / "lazy").rglob("*.py") if "common" not in p.relative_to(root).parts]
    return sorted(yaml + lazy)


@contextlib.contextmanager
def process_group_if(needed: bool):
    """SyncBN layers need a process group when built; a one-process gloo group is enough."""
    if needed and not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()
    else:
        yield


def _counts(model) -> Dict[str, int]:
    params = list(model.parameters())
    return {"parameters": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}


def describe(path, opts: Sequence = ()) -> dict:
    """Build the model of one config file (YAML, or a LazyConfig .py) on CPU; its
    architecture, norms and parameter counts. `opts`: YAML opts or LazyConfig overrides."""
    cfg = load_config(str(path), opts, device="cpu", weights="", resolve_device=False)
    specs = component_specs(cfg)
    with process_group_if("SyncBN" in {s.norm.type for s in specs.values()}):
        model = build_config_model(cfg)
    return {"config": str(path), "meta_architecture": type(model).__name__,
            "norms": " ".join(f"{c}={s.describe()}" for c, s in specs.items()), **_counts(model)}


def table_row(row: dict, root: Path = None) -> str:
    root = Path(root or config_dir()).resolve()
    path = Path(row["config"]).resolve()
    name = path.relative_to(root) if path.is_relative_to(root) else row["config"]
    return (f"| {name} | {row['meta_architecture']} | {row['norms']} | "
            f"{row['parameters'] / 1e6:.2f} M | {row['trainable'] / 1e6:.2f} M |")


BIT_HEADER = ("| timm model | config | ours, backbone | timm, backbone | timm, with classifier | "
              "max abs diff from timm (res2-res5) |")


def bit_rows(compare: Sequence[str] = (), size: int = 64):
    """Markdown rows: each timm BiT model's parameter counts (ours vs timm's; built on the meta
    device), and for those in `compare` the largest absolute difference of our res2-res5 from
    timm's with the same random weights (gn_det.checkpoint.bit_weights.compare_with_timm)."""
    from gn_det.modeling.bit import TIMM_MODELS
    from gn_det.checkpoint.bit_weights import compare_with_timm

    unknown = [n for n in compare if n not in TIMM_MODELS]
    if unknown:
        raise ValueError(f"--bit-outputs {' '.join(unknown)}: not a timm BiT model; valid: "
                         f"{', '.join(TIMM_MODELS)}")
    for name in TIMM_MODELS:
        row = compare_with_timm(name, size, outputs=name in compare)
        diff = (f"{row['max_abs_diff']:.1e} ({row['input']}, random weights)"
                if "max_abs_diff" in row else "-")
        yield (f"| {name} | {row['config']} | {row['ours_backbone']:,} | "
               f"{row['timm_backbone']:,} | {row['timm_with_classifier']:,} | {diff} |")
