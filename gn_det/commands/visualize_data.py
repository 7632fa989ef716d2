"""Draw a dataset's ground-truth boxes with their class names, to check a conversion by eye (as
detectron2's tools/visualize_data.py): any dataset of the config's DATASETS.COCO_FORMAT or a
registered detectron2 builtin, as annotated or as the training data loader feeds it.

    python tools/visualize_data.py --config-file CONFIG --dataset NAME --output DIR \\
        [--num 20] [--source annotation|dataloader] [KEY VALUE ...]

Writes one PNG per image, named after the image file, to DIR. --source dataloader shows the
augmented, resized training inputs (DATASETS.TRAIN set to NAME). Bad input ends with a one-line
error and exit status 2 (--debug shows the traceback).
"""
import argparse
import logging


from ..cli import run_cli
from ..config import load_cfg
from ..data import register_datasets_from_cfg
from ..utils.text import plural
from ..visualize import browse_dataset


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="visualize_data", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    ap.add_argument("--dataset", help="dataset name (default: the first of DATASETS.TRAIN)")
    ap.add_argument("--source", choices=["annotation", "dataloader"], default="annotation",
                    help="draw the annotations as stored, or the training data loader's inputs")
    ap.add_argument("--output", required=True, help="output directory")
    ap.add_argument("--num", type=int, default=20, help="images to draw (default: 20; 0: all)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = ap.parse_args(argv)
    if args.num < 0:
        ap.error(f"--num {args.num}: expected 0 (all) or more")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = load_cfg(args.config_file, args.opts)
    register_datasets_from_cfg(cfg)
    name = args.dataset
    if name is None:
        if not len(cfg.DATASETS.TRAIN):
            raise ValueError("DATASETS.TRAIN is empty; name the dataset with --dataset")
        name = cfg.DATASETS.TRAIN[0]
    paths = browse_dataset(cfg, name, args.output, args.num, args.source)
    print(f"wrote {plural(len(paths), 'image')} of {name} ({args.source}) to {args.output}")
    return 0


def run() -> None:
    run_cli(main, "visualize_data")


if __name__ == "__main__":
    run()
