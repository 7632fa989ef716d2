"""Export a trained gn_det detector to TorchScript and / or ONNX (and bf16 TorchScript on CPUs with
bf16 matrix units), WS folded, with the config's per-class score thresholds
(MODEL.SCORE_THRESHOLDS_FILE) in the graph, checked against eager PyTorch on sample images before
each file is written (detectron2's tools/deploy/export_model.py flags, tracing method):

    python tools/export_model.py --config-file CONFIG.yaml --format both --output DIR \\
        --sample-image photo.jpg [--sample-image more.jpg ...] MODEL.WEIGHTS model_final.pth
    python tools/export_model.py --config-file CONFIG.py --output DIR --sample-image photo.jpg \\
        train.init_checkpoint=model_final.pth

Without --sample-image, the first --num-samples images of --sample-dataset (default:
DATASETS.TEST[0], registered from DATASETS.COCO_FORMAT) are used. Writes DIR/model.ts,
DIR/model.onnx (DIR/model_bf16.ts with --format torchscript_bf16) and DIR/export.json (what was
checked, tolerances, thresholds, versions). Prints what runs
inside the exported graph and what the caller must run around it. The logic lives in
gn_det.export. Bad input ends in one `export_model: error:` line and exit status 2 (--debug
shows the traceback).
"""
import argparse
import dataclasses
import logging
import os
from typing import List, Optional

from .. import export
from ..cli import run_cli
from ..config.front import register_config_datasets
from ..engine.inference import config_precision
from ..engine.precision import log_precision


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="export_model", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE",
                    help="the config the model was trained with: YAML, or a LazyConfig .py")
    ap.add_argument("--format", default="both",
                    help=f"{', '.join(export.FORMATS)}, a comma-separated list, or both "
                         f"(default: {' and '.join(export.DEFAULT_FORMATS)}); torchscript_bf16 "
                         f"needs a CPU with bf16 matrix units (AMX-BF16 / AVX-512 BF16)")
    ap.add_argument("--output", required=True, metavar="DIR", help="output directory")
    ap.add_argument("--sample-image", action="append", default=[], metavar="PATH",
                    help="an image to check on (repeat the flag for more; the first is traced)")
    ap.add_argument("--sample-dataset", default="", metavar="NAME",
                    help="without --sample-image: a registered dataset (default DATASETS.TEST[0])")
    ap.add_argument("--num-samples", type=int, default=2,
                    help="images taken from --sample-dataset (default 2)")
    ap.add_argument("--opset", type=int, default=export.ONNX_OPSET,
                    help=f"ONNX opset (default {export.ONNX_OPSET})")
    tol, bf16 = export.DEFAULT_TOLERANCE, export.BF16_TOLERANCE
    ap.add_argument("--box-atol", type=float, default=None, metavar="PX",
                    help=f"check: allowed box difference in pixels, plus --box-rtol x the box's "
                         f"size (default {tol.box_atol:g}; bf16: {bf16.box_atol:g})")
    ap.add_argument("--box-rtol", type=float, default=None,
                    help=f"(default {tol.box_rtol:g}; bf16: {bf16.box_rtol:g}; docs/DEPLOY.md "
                         f"has the measured ones)")
    ap.add_argument("--score-atol", type=float, default=None,
                    help=f"check: allowed score difference (default {tol.score_atol:g}; bf16: "
                         f"{bf16.score_atol:g})")
    ap.add_argument("--changed-share", type=float, default=None,
                    help=f"check: share of an image's detections that may differ beyond the "
                         f"tolerance (default 0; bf16: {bf16.changed_share:g}: NMS keeping "
                         f"another of two near-equal boxes). Any of these four flags sets the "
                         f"tolerance of every format (the others from the float32 defaults)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("opts", nargs=argparse.REMAINDER,
                    help="config overrides: KEY VALUE ... with MODEL.WEIGHTS (the checkpoint) for "
                         "YAML; key=value ... with train.init_checkpoint for LazyConfig")
    args = ap.parse_args(argv)
    if args.num_samples < 1:
        ap.error("--num-samples must be >= 1")
    formats = export.DEFAULT_FORMATS if args.format == "both" else args.format.split(",")
    bad = [f for f in formats if f not in export.FORMATS]
    if bad:
        ap.error(f"--format {args.format}: valid are {', '.join(export.FORMATS)}, a "
                 f"comma-separated list of them, or both")
    args.format = list(dict.fromkeys(formats))
    given = [v for v in (args.box_atol, args.box_rtol, args.score_atol, args.changed_share)
             if v is not None]
    if given and min(given) < 0:
        ap.error("--box-atol, --box-rtol, --score-atol and --changed-share must be >= 0")
    return args


def tolerance_of(args) -> Optional[export.Tolerance]:
    """The tolerance the flags set for every format, or None (each format's own default)."""
    flags = {"box_atol": args.box_atol, "box_rtol": args.box_rtol,
             "score_atol": args.score_atol, "changed_share": args.changed_share}
    if all(v is None for v in flags.values()):
        return None
    return dataclasses.replace(export.DEFAULT_TOLERANCE,
                               **{k: v for k, v in flags.items() if v is not None})


def log_export_precision(cfg, formats) -> None:
    """One line: which precision each written form computes in, beside the config's
    MODEL.PRECISION / train.precision (a bf16 form is written only when asked for: the float32
    forms run on any CPU)."""
    precision = config_precision(cfg, log=False)
    by_precision = {}
    for fmt in formats:
        by_precision.setdefault(export.EXPORT_FORMATS[fmt].precision, []).append(fmt)
    written = "; ".join(f"{p}: {', '.join(f)}" for p, f in by_precision.items())
    hint = ("" if "bf16" in by_precision or precision.name != "bf16" else
            "; --format torchscript_bf16 writes the bf16 form this setting asks for")
    log_precision(dataclasses.replace(precision, reason=f"export writes {written} (the config "
                                      f"asks: {precision.reason}){hint}"))


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
    for fmt in args.format:
        export.check_available(fmt)  # before loading anything
    log_export_precision(cfg, args.format)
    model = export.load_trained_model(cfg)
    samples = samples_for(args, cfg)
    report = export.export_model(model, cfg, samples, args.output, args.format,
                                 tolerance_of(args), args.opset)
    print(f"norms: {report['config_norms']}; {report['ws_convs_folded']} WS convs folded")
    if report["score_thresholds"]:
        th = report["score_thresholds"]
        print(f"score thresholds in the graph ({th['file']}, {th['rule']}): "
              + ", ".join(f"{n} {'none' if t is None else f'>= {t:.3g}'}"
                          for n, t in th["thresholds"].items()))
    for result in report["formats"].values():
        tol = export.Tolerance(**result["tolerance"])
        changed = (f", {result['changed']} detection(s) changed beyond it"
                   if tol.changed_share else "")
        print(f"wrote {result['file']}: {result['runtime']} equals eager PyTorch on "
              f"{len(result['samples'])} sample(s), per detection: max |dbox| "
              f"{result['max_box_diff_px']:.2g} px, max |dscore| {result['max_score_diff']:.2g} "
              f"(tolerance: {tol.describe()}{changed})")
        same = result.get("against_eager_same_precision")
        if same:
            print(f"  and eager PyTorch in {result['precision']}: max |dbox| "
                  f"{same['max_box_diff_px']:.2g} px, max |dscore| {same['max_score_diff']:.2g}")
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
