#!/usr/bin/env python
"""Build every config under configs/ (or the ones named) on CPU and print what it holds: the
meta-architecture, the norm + WS of each component it uses, and its parameter counts.

    python tools/describe_configs.py                       # all presets, a Markdown table
    python tools/describe_configs.py configs/RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml
    python tools/describe_configs.py --bit [--bit-outputs resnetv2_50x1_bit ...]  # BiT vs timm

Models are built with MODEL.WEIGHTS "" (random init), so nothing is downloaded. SyncBN presets
build under a one-process gloo group. A bad config ends in one `describe_configs: error:` line
naming the file and key, exit status 2 (--debug shows the traceback).
"""
import argparse
import contextlib
import sys
from pathlib import Path
from typing import Sequence

import gn_det  # noqa: F401  (compat shims before detectron2)
import torch.distributed as dist
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from gn_det.cli import run_cli
from gn_det.config import add_gn_det_config, component_spec, merge_config_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
HEADER = "| config | meta-architecture | norms (+WS) per component | parameters | trainable |"


def preset_configs(root: Path = CONFIGS):
    """Every runnable config under `root`: the Base-*.yaml files are only inherited."""
    return sorted(p for p in root.rglob("*.yaml") if not p.name.startswith("Base-"))


def components(cfg):
    """The gn_det components the config's model is built from."""
    if "RetinaNet" in cfg.MODEL.META_ARCHITECTURE:
        return ["BACKBONE", "FPN", "RETINANET_HEAD"]
    return ["BACKBONE", "FPN", "BOX_HEAD"] + (["MASK_HEAD"] if cfg.MODEL.MASK_ON else [])


@contextlib.contextmanager
def process_group_if_needed(cfg):
    """SyncBN layers need a process group when built; a one-process gloo group is enough."""
    needed = "SyncBN" in {component_spec(cfg, c).norm.type for c in components(cfg)}
    if needed and not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()
    else:
        yield


def describe(path, opts=()) -> dict:
    """Build the model of one config file on CPU; its architecture, norms and parameter counts."""
    cfg = add_gn_det_config(get_cfg())
    merge_config_file(cfg, str(path))
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts])
    with process_group_if_needed(cfg):
        model = build_model(cfg)
    params = list(model.parameters())
    return {
        "config": str(path),
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "norms": " ".join(f"{c}={component_spec(cfg, c).describe()}" for c in components(cfg)),
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def table_row(row: dict, root: Path = CONFIGS) -> str:
    path = Path(row["config"]).resolve()
    name = path.relative_to(root) if path.is_relative_to(root) else row["config"]
    return (f"| {name} | {row['meta_architecture']} | {row['norms']} | "
            f"{row['parameters'] / 1e6:.2f} M | {row['trainable'] / 1e6:.2f} M |")


BIT_HEADER = ("| timm model | config | ours, backbone | timm, backbone | timm, with classifier | "
              "max abs diff from timm (res2-res5) |")


def bit_rows(compare: Sequence[str] = (), size: int = 64):
    """Markdown rows: each timm BiT model's parameter counts (ours vs timm's; built on the meta
    device), and for those in `compare` the largest absolute difference of our res2-res5 from
    timm's with the same random weights (gn_det.modeling.bit_weights.compare_with_timm)."""
    from gn_det.modeling.bit import TIMM_MODELS
    from gn_det.modeling.bit_weights import compare_with_timm

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="config files (default: every preset under "
                        "configs/, Base-*.yaml excluded)")
    parser.add_argument("--bit", action="store_true", help="instead: timm's BiT models, our "
                        "backbone's parameters vs timm's (needs timm)")
    parser.add_argument("--bit-outputs", nargs="*", default=[], metavar="MODEL",
                        help="with --bit: also compare these models' outputs with timm's")
    parser.add_argument("--bit-size", type=int, default=64, help="input size for --bit-outputs")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.bit:
        print(BIT_HEADER)
        print("|---|---|---|---|---|---|")
        for row in bit_rows(args.bit_outputs, args.bit_size):
            print(row, flush=True)
        return 0
    paths = [Path(p) for p in args.configs] or preset_configs()
    print(HEADER)
    print("|---|---|---|---|---|")
    for i, path in enumerate(paths, 1):
        print(table_row(describe(path)), flush=True)
        print(f"[{i}/{len(paths)}] {path}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main, "describe_configs")
