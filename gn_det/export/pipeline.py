"""The whole export: fold WS, trace once, write each format under a temp name, check it against
the eager model on the sample images, rename it only if the check passes, and write the report
(export.json)."""
import copy
import dataclasses
import logging
import os
import time
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..config.front import describe_specs
from ..engine.precision import prepare_for_inference, resolve_precision
from ..modeling.score_thresholds import score_thresholds_of
from ..utils.file_io import atomic_write, write_json
from ..utils.progress import Phases
from .detections import (DEFAULT_TOLERANCE, SAME_PRECISION_TOLERANCE, TOLERANCES, Comparison,
                         Detections, Tolerance, match_detections)
from .formats import (DEFAULT_FORMATS, EXPORT_FORMATS, FILE_NAMES, INPUT_NAME, ONNX_OPSET,
                      RUNTIMES, ExportError, check_available, check_formats, format_packages)
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
        "the per-class score thresholds of MODEL.SCORE_THRESHOLDS_FILE, when set "
        "(scores >= thresholds[classes], tensor ops)",
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
    tolerance: Tolerance = DEFAULT_TOLERANCE
    # reduced-precision forms: each sample against the eager model in the same precision
    same_precision: Dict[str, Comparison] = dataclasses.field(default_factory=dict)

    def summary(self) -> Dict:
        out = {"file": self.path, "runtime": RUNTIMES[self.fmt],
               "precision": EXPORT_FORMATS[self.fmt].precision,
               "export_and_check_s": round(self.seconds, 2),
               "tolerance": dataclasses.asdict(self.tolerance),
               "max_box_diff_px": max(c.max_box_diff for c in self.comparisons.values()),
               "max_score_diff": max(c.max_score_diff for c in self.comparisons.values()),
               "changed": sum(c.changed for c in self.comparisons.values()),
               "samples": {n: dataclasses.asdict(c) for n, c in self.comparisons.items()}}
        if self.same_precision:
            out["against_eager_same_precision"] = {
                "max_box_diff_px": max(c.max_box_diff for c in self.same_precision.values()),
                "max_score_diff": max(c.max_score_diff for c in self.same_precision.values()),
                "samples": {n: dataclasses.asdict(c) for n, c in self.same_precision.items()}}
        return out


def check_exported(fmt: str, path: str, samples: Sequence[Sample],
                   reference: Sequence[Detections], cfg, tolerance: Tolerance,
                   model: Optional[nn.Module] = None, opset: int = ONNX_OPSET,
                   cutoffs: Union[None, float, np.ndarray] = None,
                   against: str = "eager PyTorch") -> Dict[str, Comparison]:
    """Run the file at `path` on every sample and compare with the eager detections; raise
    ExportError naming the failing sample (and, from single-layer probes, the norm exported
    wrongly) if any comparison fails. `cutoffs`: the score threshold(s) a detection may fall
    either side of (default: the config's; per class with score thresholds)."""
    run = load_runner(fmt, path)
    out, conf = {}, settings(cfg)
    cutoffs = conf.score_thresh if cutoffs is None else cutoffs
    for sample, ref in zip(samples, reference):
        got = run(sample.image)
        cmp = match_detections(ref, got, tolerance, cutoffs, conf.detections_per_image)
        out[sample.name] = cmp
        if not cmp.ok:
            raise ExportError(f"{RUNTIMES[fmt]} differs from {against} on {sample.name} "
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
                 formats: Sequence[str] = DEFAULT_FORMATS, tolerance: Optional[Tolerance] = None,
                 opset: int = ONNX_OPSET) -> Dict:
    """Fold WS, trace, export each format under a temp name in `output_dir`, check it against
    the eager (unfolded) `model` on `samples`, rename it, and return the report (also written to
    output_dir/export.json). `tolerance`: for every format, or None for each format's own
    (detections.TOLERANCES by its precision); a reduced-precision form is also checked against
    the eager model in its precision, at the float32 tolerance. Score thresholds attached to
    `model` (gn_det.modeling.score_thresholds) are traced into the graph, and both sides of the
    check apply them. Raises ExportError; files whose check failed are not written."""
    check_supported(model)
    check_formats(formats)
    for fmt in formats:
        check_available(fmt)
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
    cutoffs = _cutoffs(model, cfg)
    results = {}
    for fmt in formats:
        t0 = time.perf_counter()
        path = os.path.join(output_dir, FILE_NAMES[fmt])
        precision = EXPORT_FORMATS[fmt].precision
        tol = tolerance or TOLERANCES[precision]
        result = FormatResult(fmt, path, 0.0, {}, tol)
        same = _same_precision_reference(folded, samples, precision)

        def check(tmp, fmt=fmt, result=result, same=same):
            result.comparisons.update(check_exported(fmt, tmp, samples, reference, cfg,
                                                     result.tolerance, folded, opset, cutoffs))
            if same is not None:
                result.same_precision.update(check_exported(
                    fmt, tmp, samples, same, cfg, SAME_PRECISION_TOLERANCE, None, opset, cutoffs,
                    against=f"eager PyTorch in {EXPORT_FORMATS[fmt].precision}"))

        atomic_write(path, lambda f, fmt=fmt: WRITERS[fmt](traced, f), check)
        result.seconds = time.perf_counter() - t0
        results[fmt] = result
        summary = result.summary()
        total = sum(c.reference for c in result.comparisons.values())
        changed = (f", {summary['changed']} of {total} detections changed"
                   if tol.changed_share else "")
        phases.done(f"{FILE_NAMES[fmt]}: {RUNTIMES[fmt]} matches eager PyTorch (max |dbox| "
                    f"{summary['max_box_diff_px']:.2g} px, max |dscore| "
                    f"{summary['max_score_diff']:.2g}{changed})")
    report = export_report(cfg, ws_convs, formats, results, tolerance, opset, packages)
    hook = score_thresholds_of(model)
    report["score_thresholds"] = hook.as_dict() if hook is not None else None
    report["seconds"] = round(time.perf_counter() - start, 2)
    write_json(os.path.join(output_dir, "export.json"), report, indent=1, default=float)
    return report


def _cutoffs(model: nn.Module, cfg) -> Union[float, np.ndarray]:
    """The score threshold a detection may fall either side of: the model's own, or per class
    the larger of it and the attached score thresholds."""
    conf, hook = settings(cfg), score_thresholds_of(model)
    if hook is None:
        return conf.score_thresh
    return np.maximum(hook.table.double().numpy(), conf.score_thresh)


def _same_precision_reference(folded: nn.Module, samples: Sequence[Sample], precision: str
                              ) -> Optional[Sequence[Detections]]:
    """For a reduced-precision form: the eager detections of the folded model prepared for
    inference in that precision (what the exported graph should reproduce exactly)."""
    if precision == "fp32":
        return None
    prepared = prepare_for_inference(copy.deepcopy(folded),
                                     resolve_precision(precision, "cpu", fallback="none"))
    return [eager_detections(prepared, s) for s in samples]


def export_report(cfg, ws_convs: int, formats: Sequence[str], results: Dict[str, FormatResult],
                  tolerance: Optional[Tolerance], opset: int, packages: Dict[str, Dict]) -> Dict:
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
        "split": SPLIT,
        "tolerance": (dataclasses.asdict(tolerance) if tolerance is not None
                      else "each format's own: formats.<name>.tolerance"),
        "versions": versions,
        "formats": {fmt: r.summary() for fmt, r in results.items()}}
