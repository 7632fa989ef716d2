"""The whole export: fold WS, trace once, write each format under a temp name, check it against
the eager model on the sample images, rename it only if the check passes, and write the report
(export.json)."""
import dataclasses
import logging
import os
import time
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from ..config.front import describe_specs
from ..utils.file_io import atomic_write, write_json
from ..utils.progress import Phases
from .detections import DEFAULT_TOLERANCE, Comparison, Detections, Tolerance, match_detections
from .formats import (FILE_NAMES, FORMATS, INPUT_NAME, ONNX_OPSET, RUNTIMES, ExportError,
                      check_formats, format_packages)
from .model import check_supported
from .norm_probes import PROBE_RUNNERS, wrong_norms
from .runtimes import load_runner
from .samples import Sample, eager_detections
from .settings import settings
from .tracing import fold_for_export, trace
from .writers import WRITERS, Traced

logger = logging.getLogger(__name__)

# detectron2's split between the exported graph and the code around it (tools/deploy).
SPLIT = {
    "outside, before the graph": [
        "reading the image in INPUT.FORMAT channel order (detectron2.data.detection_utils."
        "read_image)",
        "resizing to the test size: ResizeShortestEdge(INPUT.MIN_SIZE_TEST, "
        "INPUT.MAX_SIZE_TEST)",
        "HWC uint8 -> CHW float32 tensor, pixel values 0-255 (prepare_image)"],
    "inside the graph": [
        "normalization by MODEL.PIXEL_MEAN / PIXEL_STD and padding to the backbone's size "
        "divisibility",
        "backbone, FPN and RetinaNet head (norms as configured; WS folded into plain convs)",
        "anchors for the input's size, box decoding, score threshold, per-level top-k, "
        "class-wise NMS and the top TEST.DETECTIONS_PER_IMAGE (traced as tensor ops)",
        "clipping boxes to the input image and dropping empty ones"],
    "outside, after the graph": [
        "detector_postprocess: boxes scaled from the input (test) size back to the original "
        "image size and clipped to it (postprocess)"],
}
OUTPUTS = {"boxes": "(N, 4) float32 x0 y0 x1 y1 at the input size", "classes": "(N,) int64",
           "scores": "(N,) float32", "image_size": "(2,) int64 input H, W"}


@dataclasses.dataclass
class FormatResult:
    """One format written and checked: its file, the seconds it took, and each sample's
    comparison with eager."""

    fmt: str
    path: str
    seconds: float
    comparisons: Dict[str, Comparison]

    def summary(self) -> Dict:
        return {"file": self.path, "runtime": RUNTIMES[self.fmt],
                "export_and_check_s": round(self.seconds, 2),
                "max_box_diff_px": max(c.max_box_diff for c in self.comparisons.values()),
                "max_score_diff": max(c.max_score_diff for c in self.comparisons.values()),
                "samples": {n: dataclasses.asdict(c) for n, c in self.comparisons.items()}}


def check_exported(fmt: str, path: str, samples: Sequence[Sample],
                   reference: Sequence[Detections], cfg, tolerance: Tolerance,
                   model: Optional[nn.Module] = None, opset: int = ONNX_OPSET
                   ) -> Dict[str, Comparison]:
    """Run the file at `path` on every sample and compare with the eager detections; raise
    ExportError naming the failing sample (and, from single-layer probes, the norm exported
    wrongly) if any comparison fails."""
    run = load_runner(fmt, path)
    out, conf = {}, settings(cfg)
    for sample, ref in zip(samples, reference):
        got = run(sample.image)
        cmp = match_detections(ref, got, tolerance, conf.score_thresh, conf.detections_per_image)
        out[sample.name] = cmp
        if not cmp.ok:
            raise ExportError(f"{RUNTIMES[fmt]} differs from eager PyTorch on {sample.name} "
                              f"({sample.image.shape[2]}x{sample.image.shape[1]}): "
                              f"{cmp.describe()}{_blame(fmt, model, opset)}; {FILE_NAMES[fmt]} "
                              f"not written")
    return out


def _blame(fmt: str, model: Optional[nn.Module], opset: int) -> str:
    """'; norm layers exported wrongly: ...' from the single-layer probes of `fmt`."""
    if model is None or fmt not in PROBE_RUNNERS:
        return ""
    culprits = wrong_norms(fmt, model, opset)
    if len(culprits) > 3:
        culprits = culprits[:3] + [f"+{len(culprits) - 3} more"]
    return (f"; norm layers exported wrongly: {'; '.join(culprits)}" if culprits
            else "; every norm layer exports correctly alone")


def export_model(model: nn.Module, cfg, samples: Sequence[Sample], output_dir: str,
                 formats: Sequence[str] = FORMATS, tolerance: Tolerance = DEFAULT_TOLERANCE,
                 opset: int = ONNX_OPSET) -> Dict:
    """Fold WS, trace, export each format under a temp name in `output_dir`, check it against
    the eager (unfolded) `model` on `samples`, rename it, and return the report (also written to
    output_dir/export.json). Raises ExportError; files whose check failed are not written."""
    check_supported(model)
    check_formats(formats)
    packages = {fmt: format_packages(fmt) for fmt in formats}  # a missing one: before the work
    if not samples:
        raise ExportError("no sample images: pass --sample-image PATH or --sample-dataset NAME")
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    phases = Phases(2 + len(formats), log=logger.info)
    model = model.eval()
    reference = [eager_detections(model, s) for s in samples]
    folded, ws_convs = fold_for_export(model)
    phases.done(f"eager detections on {len(samples)} sample(s); {ws_convs} WS convs folded")
    image = samples[0].image
    traced = Traced(folded, trace(folded, image), image, opset)
    phases.done(f"traced with TracingAdapter at {image.shape[2]}x{image.shape[1]}")
    results = {}
    for fmt in formats:
        t0 = time.perf_counter()
        path = os.path.join(output_dir, FILE_NAMES[fmt])
        comparisons = {}

        def check(tmp, fmt=fmt, comparisons=comparisons):
            comparisons.update(check_exported(fmt, tmp, samples, reference, cfg, tolerance,
                                              folded, opset))

        atomic_write(path, lambda f, fmt=fmt: WRITERS[fmt](traced, f), check)
        results[fmt] = FormatResult(fmt, path, time.perf_counter() - t0, comparisons)
        summary = results[fmt].summary()
        phases.done(f"{FILE_NAMES[fmt]}: {RUNTIMES[fmt]} matches eager PyTorch (max |dbox| "
                    f"{summary['max_box_diff_px']:.2g} px, max |dscore| "
                    f"{summary['max_score_diff']:.2g})")
    report = export_report(cfg, ws_convs, formats, results, tolerance, opset, packages)
    report["seconds"] = round(time.perf_counter() - start, 2)
    write_json(os.path.join(output_dir, "export.json"), report, indent=1, default=float)
    return report


def export_report(cfg, ws_convs: int, formats: Sequence[str], results: Dict[str, FormatResult],
                  tolerance: Tolerance, opset: int, packages: Dict[str, Dict]) -> Dict:
    """export.json: the norms, folded WS convs, the graph's split, input and output layout,
    tolerance, versions of what ran, and each format's check."""
    conf = settings(cfg)
    versions = {"torch": torch.__version__}
    for modules in packages.values():
        versions.update({name: module.__version__ for name, module in modules.items()})
    return {
        "config_norms": describe_specs(cfg),
        "ws_convs_folded": ws_convs,
        "weights": conf.weights, "opset": opset if "onnx" in formats else None,
        "input": {"name": INPUT_NAME, "layout": "(3, H, W) float32, 0-255, INPUT.FORMAT "
                  f"{conf.input_format}, resized to the test size; H and W dynamic"},
        "outputs": dict(OUTPUTS),
        "split": SPLIT, "tolerance": dataclasses.asdict(tolerance),
        "versions": versions,
        "formats": {fmt: r.summary() for fmt, r in results.items()}}
