"""Convert a torchvision-naming ResNet checkpoint (GN, GN+WS or BN; torchvision, timm, mmdet) or a
timm ResNetV2 / BiT one (.pth, .bin, .safetensors) into gn_det's backbone naming, for MODEL.WEIGHTS.

    python tools/convert_weights.py resnet50_gn_ws.pth R-50-GN-WS.pth
    python tools/convert_weights.py resnetv2_50x1_bit.goog_in21k.safetensors R-BiT-50x1.pth

Prints the inferred architecture, the missing / unexpected keys and the settings the weights
need. (timm ResNetV2 files also load as they are, through MODEL.WEIGHTS.) The logic lives in
gn_det.checkpoint.convert. A bad input file ends in one `convert_weights: error:` line and exit
status 2 (--debug shows the traceback).
"""
import argparse

from ..checkpoint import convert_weights_file
from ..cli import run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="checkpoint with torchvision ResNet or timm ResNetV2 names "
                        "(.pth/.pt/.bin, .safetensors)")
    parser.add_argument("output", help="converted weights to write (.pth or .pkl)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    report = convert_weights_file(args.input, args.output)  # WeightsError: one line (run_cli)
    print("\n".join(report.lines()))
    print(f"wrote {args.output}")
    for note in report.notes:
        print(f"note: {note}")
    return 0


def run() -> None:
    run_cli(main, "convert_weights")


if __name__ == "__main__":
    run()
