"""Export a trained gn_det detector to TorchScript and / or ONNX, WS folded, checked against eager
PyTorch on sample images before each file is written (detectron2's tools/deploy/export_model.py
flags, tracing method):

    python tools/export_model.py --config-file CONFIG.yaml --format both --output DIR \\
        --sample-image photo.jpg [--sample-image more.jpg ...] MODEL.WEIGHTS model_final.pth
    python tools/export_model.py --config-file CONFIG.py --output DIR --sample-image photo.jpg \\
        train.init_checkpoint=model_final.pth

Without --sample-image, the first --num-samples images of --sample-dataset (default:
DATASETS.TEST[0], registered from DATASETS.COCO_FORMAT) are used. Writes DIR/model.ts,
DIR/model.onnx and DIR/export.json (what was checked, tolerances, versions). Prints what runs
inside the exported graph and what the caller must run around it. The logic lives in
gn_det.export. Bad input ends in one `export_model: error:` line and exit status 2 (--debug
shows the traceback).
"""
import argparse
import logging
import os
from typing import List

from .. import export
from ..cli import run_cli
from ..config.front import register_config_datasets


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="export_model", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE",
                    help="the config the model was trained with: YAML, or a LazyConfig .py")
    ap.add_argument("--format", default="both",
                    help=f"{', '.join(export.FORMATS)}, a comma-separated list, or both "
                         f"(default)")
    ap.add_argument("--output", required=True, metavar="DIR", help="output directory")
    ap.add_argument("--sample-image", action="append", default=[], metavar="PATH",
                    help="an image to check on (repeat the flag for more; the first is traced)")
    ap.add_argument("--sample-dataset", default="", metavar="NAME",
                    help="without --sample-image: a registered dataset (default DATASETS.TEST[0])")
    ap.add_argument("--num-samples", type=int, default=2,
                    help="images taken from --sample-dataset (default 2)")
    ap.add_argument("--opset", type=int, default=export.ONNX_OPSET,
                    help=f"ONNX opset (default {export.ONNX_OPSET})")
    tol = export.DEFAULT_TOLERANCE
    ap.add_argument("--box-atol", type=float, default=tol.box_atol, metavar="PX",
                    help=f"check: allowed box difference in pixels, plus --box-rtol x the box's "
                         f"size (default {tol.box_atol:g})")
    ap.add_argument("--box-rtol", type=float, default=tol.box_rtol,
                    help=f"(default {tol.box_rtol:g}; docs/DEPLOY.md has the measured ones)")
    ap.add_argument("--score-atol", type=float, default=tol.score_atol,
                    help=f"check: allowed score difference (default {tol.score_atol:g})")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("opts", nargs=argparse.REMAINDER,
                    help="config overrides: KEY VALUE ... with MODEL.WEIGHTS (the checkpoint) for "
                         "YAML; key=value ... with train.init_checkpoint for LazyConfig")
    args = ap.parse_args(argv)
    if args.num_samples < 1:
        ap.error("--num-samples must be >= 1")
    formats = export.FORMATS if args.format == "both" else args.format.split(",")
    bad = [f for f in formats if f not in export.FORMATS]
    if bad:
        ap.error(f"--format {args.format}: valid are {', '.join(export.FORMATS)}, a "
                 f"comma-separated list of them, or both")
    args.format = list(dict.fromkeys(formats))
    if min(args.box_atol, args.box_rtol, args.score_atol) < 0:
        ap.error("--box-atol, --box-rtol and --score-atol must be >= 0")
    return args


def samples_for(args, cfg) -> List[export.Sample]:
    """The --sample-image files, or else the first --num-samples images of --sample-dataset
    (default: the config's first test dataset, registered from the config)."""
    if args.sample_image:
        return export.read_sample_images(cfg, args.sample_image)
    register_config_datasets(cfg)
    test = export.settings(cfg).test_datasets
    name = args.sample_dataset or (test[0] if test else "")
    if not name:
        raise export.ExportError("no sample images: pass --sample-image PATH or "
                                 "--sample-dataset NAME")
    return export.dataset_samples(cfg, name, args.num_samples)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = export.load_export_config(args.config_file, args.opts)
    model = export.load_trained_model(cfg)
    samples = samples_for(args, cfg)
    tol = export.Tolerance(args.box_atol, args.box_rtol, args.score_atol)
    report = export.export_model(model, cfg, samples, args.output, args.format, tol, args.opset)
    print(f"norms: {report['config_norms']}; {report['ws_convs_folded']} WS convs folded")
    for result in report["formats"].values():
        print(f"wrote {result['file']}: {result['runtime']} equals eager PyTorch on "
              f"{len(result['samples'])} sample(s), per detection: max |dbox| "
              f"{result['max_box_diff_px']:.2g} px, max |dscore| {result['max_score_diff']:.2g} "
              f"(tolerance: {tol.box_atol:g} px + {tol.box_rtol:g} x box size; score "
              f"{tol.score_atol:g})")
    for where, steps in report["split"].items():
        print(f"{where}:", *(f"  - {s}" for s in steps), sep="\n")
    print(f"input {export.INPUT_NAME}: {report['input']['layout']}; outputs: "
          + ", ".join(f"{k} {v}" for k, v in report["outputs"].items()))
    print(f"wrote {os.path.join(args.output, 'export.json')}")
    return 0


def run() -> None:
    run_cli(main, "export_model")


if __name__ == "__main__":
    run()
