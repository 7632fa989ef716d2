"""Build every config under configs/ (or the ones named) on CPU and print what it holds: the
meta-architecture, the norm + WS of each component it uses, and its parameter counts; YAML and
LazyConfig presets alike (gn_det.model_zoo.describe).

    python tools/describe_configs.py                       # all presets, a Markdown table
    python tools/describe_configs.py configs/RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml
    python tools/describe_configs.py --bit [--bit-outputs resnetv2_50x1_bit ...]  # BiT vs timm

Models are built with random weights (MODEL.WEIGHTS "" / train.init_checkpoint ""), so nothing
is downloaded. SyncBN presets build under a one-process gloo group. A bad config ends in one
`describe_configs: error:` line naming the file and key, exit status 2 (--debug shows the
traceback).
"""
import argparse
import sys
from pathlib import Path

from ..cli import run_cli
from ..model_zoo.describe import BIT_HEADER, HEADER, bit_rows, describe, preset_configs, table_row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="config files (default: every preset under "
                        "configs/, Base-*.yaml and lazy/common/ excluded)")
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


def run() -> None:
    run_cli(main, "describe_configs")


if __name__ == "__main__":
    run()
