"""Fine-tuning from a stand-in GN+WS (BiT) pretraining of our own vs from scratch, end to end
(gn_det.study.pretrain documents the stages): `gn-det-pretrain --config-file ... --out OUT`."""
import argparse
import os
import sys

import torch

from ..cli import run_cli
from ..config import load_cfg
from ..study.pretrain import (WEIGHTS_FILE, collect_crops, dataset_opts, finetune, format_markdown,
                              num_classes, pretrain, timm_bit)
from ..utils.file_io import atomic_write, read_json, write_json
from ..utils.machine import machine_info

PROG = "pretrain"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--config-file", required=True, help="a BiT detection config (e.g. "
                    "configs/toy/retinanet_BiT_toy_shapes.yaml)")
    ap.add_argument("--train-json", required=True, help="COCO json: crops for pretraining, "
                    "and the fine-tuning train set")
    ap.add_argument("--val-json", required=True, help="COCO json: crop accuracy, and the set "
                    "both fine-tuned detectors are evaluated on")
    ap.add_argument("--image-root", required=True, help="folder the jsons' file_name are in")
    ap.add_argument("--val-image-root", default="", help="the val json's, if another folder")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--stage", choices=("all", "pretrain", "finetune"), default="all")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--crop-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64, help="pretraining crops per step")
    ap.add_argument("--lr", type=float, default=2e-3, help="pretraining AdamW learning rate")
    ap.add_argument("--background-per-image", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config opts for the "
                    "fine-tuning runs (schedule, input size, ...)")
    args = ap.parse_args(argv)
    for flag in ("epochs", "crop_size", "batch"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.makedirs(os.path.join(args.out, "pretrain"), exist_ok=True)
    val_root = args.val_image_root or args.image_root
    classes = num_classes(args.train_json)
    opts = dataset_opts(args.train_json, args.val_json, args.image_root, classes,
                        val_root) + args.opts
    cfg = load_cfg(args.config_file, opts, resolve_device=False)
    timm_bit(cfg, classes + 1)  # a config timm's BiT cannot build fails here, before any work
    record, weights = None, os.path.join(args.out, "pretrain", WEIGHTS_FILE)
    if args.stage in ("all", "pretrain"):
        print(f"collecting crops from {args.train_json} and {args.val_json}", flush=True)
        crops = [collect_crops(j, root, args.crop_size, background_per_image=
                               args.background_per_image, seed=args.seed + i)
                 for i, (j, root) in enumerate([(args.train_json, args.image_root),
                                                (args.val_json, val_root)])]
        print(f"crops: train {crops[0].counts()}, val {crops[1].counts()}", flush=True)
        record = pretrain(cfg, crops[0], crops[1], os.path.join(args.out, "pretrain"),
                          epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                          log=lambda s: print(s, flush=True))
        print(f"wrote {weights} (timm state dict; loads with max |diff| "
              f"{record['loaded_max_abs_diff']:.2e})", flush=True)
    if args.stage == "pretrain":
        return 0
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: no pretrained weights; run --stage pretrain (or "
                                f"all) with this --out first")
    if record is None and os.path.isfile(os.path.join(args.out, "pretrain", "pretrain.json")):
        record = read_json(os.path.join(args.out, "pretrain", "pretrain.json"), "pretrain record")
    runs = finetune(args.config_file, opts, weights, args.out, args.threads,
                    log=lambda s: print(s, flush=True))
    summary = {"command": " ".join([PROG] + list(sys.argv[1:] if argv is None else argv)),
               "machine": machine_info(), "torch": torch.__version__, "pretrain": record,
               "runs": runs}
    write_json(os.path.join(args.out, "finetune.json"), summary, indent=1)
    text = format_markdown(record, runs)
    atomic_write(os.path.join(args.out, "finetune.md"), lambda f: f.write(text.encode()))
    print(text, end="")
    return 0


def run() -> None:
    run_cli(main, PROG)


if __name__ == "__main__":
    run()
