"""Export a trained gn_det detector to TorchScript and ONNX with WS folded, and check the exported
model against eager PyTorch before it takes its file name.

The export is detectron2's (tools/deploy/export_model.py, `--export-method tracing`): the model
in eval mode is wrapped in `detectron2.export.TracingAdapter`, traced once with `torch.jit.trace`
(TorchScript) and that trace exported with `torch.onnx.export(dynamo=False)` (ONNX). What runs
inside the exported graph and what stays outside is detectron2's split (SPLIT below). Every
exported file is first written under a temp name, loaded back (torch.jit.load / ONNX Runtime's
CPU provider), run on the sample images and compared detection by detection with the eager model;
only a file whose check passes is renamed to model.ts / model.onnx.
"""
import contextlib
import copy
import dataclasses
import logging
import os
import re
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou

from .utils.errors import one_line

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}
RUNTIMES = {"torchscript": "TorchScript (torch.jit.load)",
            "onnx": "ONNX Runtime (CPUExecutionProvider)"}
ONNX_OPSET = 17
INPUT_NAME = "image"
# The flat outputs of the traced RetinaNet, in TracingAdapter's order (its outputs_schema:
# Instances fields sorted by name, then the image size).
OUTPUT_NAMES = ("boxes", "classes", "scores", "image_size")
_FIELDS = {"pred_boxes": "boxes", "pred_classes": "classes", "scores": "scores"}

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


class ExportError(ValueError):
    """An export that cannot be made or would not be trusted; one line naming the layer / op /
    format at fault."""


# ------------------------------------------------------------------------------ config and model

def is_lazy(cfg) -> bool:
    """A LazyConfig (omegaconf) rather than a YAML CfgNode."""
    from detectron2.config import CfgNode

    return not isinstance(cfg, CfgNode)


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What the export reads from the training config, the same for YAML and LazyConfig."""

    weights: str
    min_size_test: int
    max_size_test: int
    input_format: str
    score_thresh: float
    detections_per_image: int
    test_datasets: Tuple[str, ...]


def settings(cfg) -> ExportSettings:
    """The export's settings from a YAML config (MODEL.WEIGHTS, INPUT.*_SIZE_TEST, ...) or a
    LazyConfig (train.init_checkpoint, the test mapper's ResizeShortestEdge, model.*)."""
    if not is_lazy(cfg):
        return ExportSettings(cfg.MODEL.WEIGHTS, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                              cfg.INPUT.FORMAT, cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
                              cfg.TEST.DETECTIONS_PER_IMAGE, tuple(cfg.DATASETS.TEST))
    from detectron2.config import instantiate
    from detectron2.data import transforms as T

    from .lazy_config import call_argument

    resize = [a for a in instantiate(cfg.dataloader.test.mapper.augmentations)
              if isinstance(a, T.ResizeShortestEdge)]
    if len(resize) != 1:
        raise ExportError("dataloader.test.mapper.augmentations: expected one "
                          f"ResizeShortestEdge (the test size), found {len(resize)}")
    names = cfg.dataloader.test.dataset.names
    return ExportSettings(str(cfg.train.init_checkpoint), int(resize[0].short_edge_length[0]),
                          int(resize[0].max_size), str(call_argument(cfg.model, "input_format")),
                          float(call_argument(cfg.model, "test_score_thresh")),
                          int(call_argument(cfg.model, "max_detections_per_image")),
                          (names,) if isinstance(names, str) else tuple(names))


def load_export_config(config_file: str, opts: Sequence[str] = ()):
    """The config to export, read in this one place: a YAML config through
    gn_det.config.load_cfg (opts: KEY VALUE ...), or a LazyConfig .py through
    gn_det.lazy_config.load_lazy_cfg (opts: key=value ...). The export and its check run on CPU."""
    if config_file.endswith(".py"):
        from .lazy_config import load_lazy_cfg

        cfg = load_lazy_cfg(config_file, [*opts, "train.device=cpu"])
        key = "train.init_checkpoint"
        example = "train.init_checkpoint=output/run/model_final.pth"
    else:
        from .config import load_cfg

        cfg = load_cfg(config_file, [*opts, "MODEL.DEVICE", "cpu"])
        key, example = "MODEL.WEIGHTS", "MODEL.WEIGHTS output/run/model_final.pth"
    if not settings(cfg).weights:
        raise ExportError(f"{key} is empty: pass the trained checkpoint to export, e.g. "
                          f"{example}")
    return cfg


def component_specs(cfg) -> Dict[str, object]:
    """Each component's norm + WS (ConvNormSpec), from a YAML config or a LazyConfig."""
    if is_lazy(cfg):
        from .lazy_config import lazy_component_specs

        return lazy_component_specs(cfg)
    from .config import all_component_specs

    return all_component_specs(cfg)


def _trained_config(path: str, lazy: bool):
    """The config.yaml that training wrote beside the checkpoint (train_net: a YAML config;
    lazy_train_net: LazyConfig.save's YAML)."""
    if lazy:
        from detectron2.config import LazyConfig

        return LazyConfig.load(path)
    from .config import load_cfg

    return load_cfg(path, resolve_device=False)


def check_trained_config(cfg, weights: str) -> None:
    """A checkpoint records shapes, not norm kinds (GN with any group count, LN and IN, with or
    without WS, have the same tensors): where training left its config.yaml beside the
    checkpoint, every component's norm and WS must be the ones this config builds."""
    trained = os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yaml")
    if not os.path.isfile(trained):
        return
    try:
        theirs = component_specs(_trained_config(trained, is_lazy(cfg)))
    except Exception as e:  # noqa: BLE001  another kind of config, or unreadable: not compared
        logger.warning("%s: not compared with the config (%s)", trained, one_line(e))
        return
    ours = component_specs(cfg)
    differ = [c for c in ours if ours[c] != theirs.get(c)]
    if differ:
        raise ExportError(
            f"checkpoint {weights} was trained with {trained} ("
            + ", ".join(f"{c}={_spec_text(theirs.get(c))}" for c in differ)
            + "), but this config builds " + ", ".join(f"{c}={_spec_text(ours[c])}"
                                                       for c in differ)
            + "; pass the config it was trained with")


def _spec_text(spec) -> str:
    """'GN G=32', 'GN C/G=16+WS(timm)', 'none': what a component's ConvNormSpec builds."""
    if spec is None:
        return "?"
    norm = spec.norm
    text = norm.type or "none"
    if norm.type == "GN":
        text += (f" C/G={norm.channels_per_group}" if norm.channels_per_group
                 else f" G={norm.num_groups or 32}")
    if norm.type and norm.eps != 1e-5:
        text += f" eps={norm.eps:g}"
    if spec.ws:
        text += f"+WS({spec.ws.style})"
    return text


def load_trained_model(cfg) -> nn.Module:
    """The eager model the config builds, in eval mode, with MODEL.WEIGHTS loaded strictly: a
    missing file, tensors of another shape, or missing / unexpected tensors end in one line."""
    from detectron2.modeling import build_model

    from . import modeling  # noqa: F401  (registers gn_det's components)
    from .checkpoint import AtomicCheckpointer

    weights = settings(cfg).weights
    check_trained_config(cfg, weights)
    if is_lazy(cfg):
        from detectron2.config import instantiate

        model = instantiate(cfg.model)
    else:
        model = build_model(cfg)
    AtomicCheckpointer(model, strict=True).load(weights)
    return model.eval()


def check_supported(model: nn.Module) -> None:
    from detectron2.modeling.meta_arch import RetinaNet

    if not isinstance(model, RetinaNet):
        raise ExportError(f"MODEL.META_ARCHITECTURE {type(model).__name__}: export supports "
                          f"RetinaNet models (GNRetinaNet, RetinaNet) for now")


# ------------------------------------------------------------------------------ samples (outside)

@dataclasses.dataclass
class Sample:
    """One image as the exported graph takes it, and its original size."""

    name: str
    image: torch.Tensor  # (3, H, W) float32, 0-255, INPUT.FORMAT order, resized to the test size
    height: int          # original image size, for postprocess()
    width: int


def prepare_image(cfg, image: np.ndarray, name: str = "image") -> Sample:
    """Outside the graph, before it: resize an HWC image (INPUT.FORMAT order) to the test size as
    detectron2's DefaultPredictor does, as a CHW float32 tensor."""
    from detectron2.data import transforms as T

    height, width = image.shape[:2]
    conf = settings(cfg)
    resize = T.ResizeShortestEdge([conf.min_size_test] * 2, conf.max_size_test)
    resized = resize.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
    return Sample(name, tensor, height, width)


def read_sample_images(cfg, paths: Sequence[str]) -> List[Sample]:
    """Samples from image files; a missing or unreadable file ends in one line naming it."""
    from PIL import UnidentifiedImageError

    from detectron2.data.detection_utils import read_image

    samples, input_format = [], settings(cfg).input_format
    for path in paths:
        if not os.path.isfile(path):
            raise ExportError(f"--sample-image {path}: no such file")
        try:
            image = read_image(path, format=input_format)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise ExportError(f"--sample-image {path}: not an image PIL can read "
                              f"({one_line(e, brief=True)})") from None
        samples.append(prepare_image(cfg, image, os.path.basename(path)))
    return samples


def dataset_samples(cfg, name: str, count: int) -> List[Sample]:
    """The first `count` images of a registered dataset (as detectron2's export_model takes the
    first batch of DATASETS.TEST[0])."""
    from detectron2.data import DatasetCatalog

    if name not in DatasetCatalog.list():
        raise ExportError(f"--sample-dataset {name}: not a registered dataset; register it with "
                          f"DATASETS.COCO_FORMAT, or pass --sample-image PATH")
    records = DatasetCatalog.get(name)[:count]
    if not records:
        raise ExportError(f"--sample-dataset {name}: has no images")
    return read_sample_images(cfg, [r["file_name"] for r in records])


def postprocess(detections: "Detections", sample: Sample) -> "Detections":
    """Outside the graph, after it: detectron2's detector_postprocess, from the input size back
    to the sample's original size."""
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import Boxes, Instances

    inst = Instances(tuple(sample.image.shape[1:]))
    inst.pred_boxes = Boxes(torch.as_tensor(detections.boxes))
    inst.scores = torch.as_tensor(detections.scores)
    inst.pred_classes = torch.as_tensor(detections.classes)
    return Detections.of(detector_postprocess(inst, sample.height, sample.width))


# ------------------------------------------------------------------------------ detections

@dataclasses.dataclass
class Detections:
    """One image's detections as numpy arrays: boxes (N, 4) x0 y0 x1 y1, scores (N,), classes."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def of(cls, instances) -> "Detections":
        return cls(instances.pred_boxes.tensor.detach().numpy().astype(np.float64),
                   instances.scores.detach().numpy().astype(np.float64),
                   instances.pred_classes.detach().numpy().astype(np.int64))

    @classmethod
    def from_outputs(cls, outputs: Sequence) -> "Detections":
        """From the exported graph's flat outputs (OUTPUT_NAMES order)."""
        named = dict(zip(OUTPUT_NAMES, (np.asarray(o) for o in outputs)))
        return cls(named["boxes"].astype(np.float64), named["scores"].astype(np.float64),
                   named["classes"].astype(np.int64))

    def __len__(self):
        return len(self.scores)


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far an exported model's detection may be from eager PyTorch's: a box coordinate by
    box_atol pixels plus box_rtol times the box's size (box decoding multiplies the head's
    deltas by anchor sizes, so float noise in the deltas grows with the box), a score by
    score_atol. Measured in docs/DEPLOY.md."""

    box_atol: float = 1e-4
    box_rtol: float = 5e-4
    score_atol: float = 2e-5

    def box_limit(self, boxes: np.ndarray) -> np.ndarray:
        size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        return self.box_atol + self.box_rtol * size


DEFAULT_TOLERANCE = Tolerance()


@dataclasses.dataclass
class Comparison:
    """Exported against eager detections of one image, matched per detection."""

    reference: int
    exported: int
    matched: int
    max_box_diff: float = 0.0     # pixels
    max_box_excess: float = 0.0   # worst |diff| / allowed (<= 1 passes)
    max_score_diff: float = 0.0
    unmatched: List[str] = dataclasses.field(default_factory=list)  # not explained by a cut-off

    @property
    def ok(self) -> bool:
        return not self.unmatched and self.max_box_excess <= 1.0

    def describe(self) -> str:
        text = (f"{self.matched}/{self.reference} detections matched, max |dbox| "
                f"{self.max_box_diff:.2g} px ({self.max_box_excess:.2g} of the tolerance), max "
                f"|dscore| {self.max_score_diff:.2g}")
        if self.unmatched:
            text += f"; unmatched: {', '.join(self.unmatched[:3])}"
            text += f" (+{len(self.unmatched) - 3} more)" if len(self.unmatched) > 3 else ""
        return text


def match_detections(reference: Detections, exported: Detections,
                     tolerance: Tolerance = DEFAULT_TOLERANCE, score_thresh: float = 0.0,
                     max_detections: int = 0) -> Comparison:
    """Pair each exported detection with an eager one of the same class (IoU >= 0.5), closest
    first (greedy on the box and score differences relative to the tolerance), never relying on
    their order. A detection left unpaired passes only where a cut-off explains it: its score is
    within score_atol of the score threshold, or of the lowest score kept by the other side when
    that side holds max_detections."""
    ref, out = reference, exported
    limit = tolerance.box_limit(ref.boxes)
    pairs = []
    for cls in np.union1d(ref.classes, out.classes):
        i_idx, j_idx = np.flatnonzero(ref.classes == cls), np.flatnonzero(out.classes == cls)
        if not len(i_idx) or not len(j_idx):
            continue
        box = np.abs(ref.boxes[i_idx, None, :] - out.boxes[None, j_idx, :]).max(axis=2)
        score = np.abs(ref.scores[i_idx, None] - out.scores[None, j_idx])
        cost = np.maximum(box / limit[i_idx, None], score / tolerance.score_atol)
        iou = box_iou(torch.from_numpy(ref.boxes[i_idx]), torch.from_numpy(out.boxes[j_idx]))
        cost[~(iou.numpy() >= 0.5)] = np.inf  # NaN (two empty boxes) is no match either
        for a, b in zip(*np.nonzero(np.isfinite(cost))):
            pairs.append((cost[a, b], i_idx[a], j_idx[b], box[a, b], score[a, b]))
    pairs.sort(key=lambda p: p[0])
    used_i, used_j = set(), set()
    result = Comparison(len(ref), len(out), 0)
    for _, i, j, box, score in pairs:
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        result.matched += 1
        result.max_box_diff = max(result.max_box_diff, float(box))
        result.max_box_excess = max(result.max_box_excess, float(box / limit[i]))
        result.max_score_diff = max(result.max_score_diff, float(score))
    for side, dets, used, other in (("eager", ref, used_i, out), ("exported", out, used_j, ref)):
        floor = other.scores.min() if max_detections and len(other) >= max_detections else None
        for k in range(len(dets)):
            if k in used:
                continue
            s = dets.scores[k]
            if abs(s - score_thresh) <= tolerance.score_atol or (
                    floor is not None and s <= floor + tolerance.score_atol):
                continue  # at a cut-off: float noise decides whether it is kept
            result.unmatched.append(f"{side} class {dets.classes[k]} score {s:.4f} box "
                                    f"{np.round(dets.boxes[k], 1).tolist()}")
    if result.max_score_diff > tolerance.score_atol:
        result.unmatched.append(f"a score differs by {result.max_score_diff:.2g} "
                                f"(> {tolerance.score_atol:g})")
    return result


def eager_detections(model: nn.Module, sample: Sample) -> Detections:
    """The eager model's detections at the input (test) size, as the graph returns them."""
    with torch.no_grad():
        return Detections.of(model([{"image": sample.image}])[0]["instances"])


# ------------------------------------------------------------------------------ export

def fold_for_export(model: nn.Module) -> Tuple[nn.Module, int]:
    """A WS-folded copy of the model in eval mode, and how many WS convs were folded."""
    from .layers import WSConv2d, fold_ws

    count = sum(isinstance(m, WSConv2d) for m in model.modules())
    return fold_ws(copy.deepcopy(model)).eval(), count


def trace(model: nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """detectron2's TracingAdapter around the eval-mode model, traced on one image. The adapter
    is put in eval mode too: a fresh nn.Module trains, and exporters restore the mode they found
    on the module they get, which would switch the model back to training."""
    from detectron2.export import TracingAdapter

    adapter = TracingAdapter(model, [{"image": image}]).eval()
    try:
        with torch.no_grad(), _quiet_tracer():
            traced = torch.jit.trace(adapter, (image,), check_trace=False)
    except Exception as e:  # noqa: BLE001  the tracer raises RuntimeError and more
        raise ExportError(f"torch.jit.trace failed: {one_line(e, brief=True)}") from None
    names = _output_names(adapter.outputs_schema)
    if tuple(names) != OUTPUT_NAMES:
        raise ExportError(f"the traced model returns {names}, expected {list(OUTPUT_NAMES)}")
    return traced


@contextlib.contextmanager
def _quiet_tracer():
    """Without the tracer's warnings about Python values in detectron2's code (shapes, asserts):
    the check against eager is what tells whether the trace generalizes; nor torch's notices
    that torch.jit is deprecated (detectron2's export is built on it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated",
                                category=FutureWarning)
        yield


def _output_names(schema) -> List[str]:
    """Names of TracingAdapter's flat outputs for one image's Instances."""
    inner = getattr(schema, "schemas", [None])[0]
    inst = getattr(inner, "schemas", [None])[0] if inner is not None else None
    keys = getattr(inst, "keys", None)
    if keys is None:
        return [f"output_{i}" for i in range(sum(getattr(schema, "sizes", [0])))]
    return [_FIELDS.get(k, k) for k in keys] + ["image_size"]


def layers_using(traced: torch.jit.ScriptModule, op: str) -> List[str]:
    """The innermost modules (dotted names, as in the model's state dict) whose traced code
    calls `op` (e.g. 'aten::group_norm')."""
    found = []

    def visit(block):
        for node in block.nodes():
            if node.kind() == op:
                name = _scope_name(node.scopeName())
                if name not in found:
                    found.append(name)
            for sub in node.blocks():
                visit(sub)

    visit(traced.inlined_graph)
    return [n for n in found if not any(o.startswith(n + ".") for o in found if o != n)]


def _scope_name(scope: str) -> str:
    """'head.cls_subnet.2' from a traced node's scope: the tracer writes
    '__module.model/__module.model.head/...', the ONNX exporter rewrites it in place as
    'pkg.Type::name/...'; the leading 'model' is TracingAdapter's attribute."""
    parts = [p for p in scope.split("/") if p]
    if parts and all("::" in p for p in parts):
        names = [p.rsplit("::", 1)[1] for p in parts]
    else:
        names = parts[-1].replace("__module.", "").split(".") if parts else []
    names = [n for n in names if n]
    if names and names[0] == "model":
        names = names[1:]
    return ".".join(names) or "<top>"


def _op_error(fmt: str, exc: BaseException, traced) -> ExportError:
    text = str(exc)
    m = re.search(r"operator '([\w:.]+)'", text) or re.search(r"'(aten::\w+|\w+::\w+)'", text)
    op = m.group(1) if m else ""
    if op and "::" not in op:
        op = f"aten::{op}"
    layers = layers_using(traced, op) if op else []
    where = f" in {', '.join(layers[:3])}" if layers else ""
    what = f"op {op}{where}" if op else "the model"
    return ExportError(f"{fmt} export failed: {what} cannot be exported "
                       f"({one_line(exc, brief=True)})")


def write_torchscript(traced, f) -> None:
    torch.jit.save(traced, f)


def write_onnx(traced, image: torch.Tensor, f, opset: int = ONNX_OPSET) -> None:
    """The traced model as ONNX (torch's TorchScript-based exporter), input height and width
    dynamic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(traced, (image,), f, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes={INPUT_NAME: {1: "height", 2: "width"}})
        except Exception as e:  # noqa: BLE001  torch.onnx raises OnnxExporterError and more
            raise _op_error("onnx", e, traced) from None


def load_runner(fmt: str, path: str) -> Callable[[torch.Tensor], Detections]:
    """Load an exported file as its runtime does and return image -> Detections."""
    if fmt == "torchscript":
        with _quiet_tracer():
            module = torch.jit.load(path, map_location="cpu")

        def run(image):
            with torch.no_grad():
                return Detections.from_outputs([o.numpy() for o in module(image)])
    else:
        import onnx
        import onnxruntime as ort

        try:
            onnx.checker.check_model(path)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"the exported ONNX model is not valid ONNX: "
                              f"{one_line(e, brief=True)}") from None
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run(image):
            return Detections.from_outputs(session.run(None, {INPUT_NAME: image.numpy()}))
    return run


# ------------------------------------------------------------------------------ norm probes

def norm_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """One layer per distinct norm configuration (type, groups, channels, eps) of the model,
    by dotted name: what a norm probe exports alone."""
    from detectron2.layers import FrozenBatchNorm2d

    kinds = (nn.GroupNorm, nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)
    seen, out = set(), {}
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            key = repr(module)
            if key not in seen:
                seen.add(key)
                out[name] = module
    return out


def probe_norm(fmt: str, norm: nn.Module, opset: int = ONNX_OPSET,
               size: Tuple[int, int] = (7, 9)) -> float:
    """Largest |difference| between one norm layer (eval mode) and its export in `fmt`, on a
    random feature map: tells which norm an exporter gets wrong."""
    import io

    channels = getattr(norm, "num_channels", None) or norm.num_features
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, *size, generator=gen) * 3 + 1
    layer = copy.deepcopy(norm).eval()
    with torch.no_grad(), _quiet_tracer():
        expected = layer(x)
        traced = torch.jit.trace(layer, (x,))
    if fmt == "torchscript":
        with torch.no_grad():
            got = traced(x).numpy()
    else:
        import onnxruntime as ort

        buf = io.BytesIO()
        write_onnx_plain(traced, x, buf, opset)
        session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x.numpy()})[0]
    return float(np.abs(got - expected.numpy()).max())


def write_onnx_plain(module, x: torch.Tensor, f, opset: int = ONNX_OPSET) -> None:
    """One tensor in ("x"), one out: for single layers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), f, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"])


def wrong_norms(fmt: str, model: nn.Module, opset: int = ONNX_OPSET,
                atol: float = 1e-4) -> List[str]:
    """'name (module): max |diff|' for each norm configuration whose lone export differs."""
    bad = []
    for name, norm in norm_layers(model).items():
        try:
            diff = probe_norm(fmt, norm, opset)
        except Exception as e:  # noqa: BLE001  an exporter failing on the layer names it too
            bad.append(f"{name} ({norm}): {one_line(e, brief=True)}")
            continue
        if not diff <= atol:
            bad.append(f"{name} ({norm}): max |diff| {diff:.3g}")
    return bad


# ------------------------------------------------------------------------------ the whole export

@dataclasses.dataclass
class FormatResult:
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
            culprits = wrong_norms(fmt, model, opset) if model is not None else []
            if len(culprits) > 3:
                culprits = culprits[:3] + [f"+{len(culprits) - 3} more"]
            blame = (f"; norm layers exported wrongly: {'; '.join(culprits)}" if culprits
                     else "; every norm layer exports correctly alone")
            raise ExportError(f"{RUNTIMES[fmt]} differs from eager PyTorch on {sample.name} "
                              f"({sample.image.shape[2]}x{sample.image.shape[1]}): "
                              f"{cmp.describe()}{blame}; {FILE_NAMES[fmt]} not written")
    return out


def export_model(model: nn.Module, cfg, samples: Sequence[Sample], output_dir: str,
                 formats: Sequence[str] = FORMATS, tolerance: Tolerance = DEFAULT_TOLERANCE,
                 opset: int = ONNX_OPSET) -> Dict:
    """Fold WS, trace, export each format under a temp name in `output_dir`, check it against
    the eager (unfolded) `model` on `samples`, rename it, and return the report (also written to
    output_dir/export.json). Raises ExportError; files whose check failed are not written."""
    from .utils.file_io import atomic_write, write_json

    check_supported(model)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"--format {','.join(unknown or formats)}: valid are "
                          f"{', '.join(FORMATS)}")
    if not samples:
        raise ExportError("no sample images: pass --sample-image PATH or --sample-dataset NAME")
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    steps = 2 + len(formats)
    step = _Steps(steps, start)
    model = model.eval()
    reference = [eager_detections(model, s) for s in samples]
    folded, ws_convs = fold_for_export(model)
    step.done(f"eager detections on {len(samples)} sample(s); {ws_convs} WS convs folded")
    traced = trace(folded, samples[0].image)
    step.done(f"traced with TracingAdapter at {samples[0].image.shape[2]}x"
              f"{samples[0].image.shape[1]}")
    results = {}
    for fmt in formats:
        t0 = time.perf_counter()
        path = os.path.join(output_dir, FILE_NAMES[fmt])
        comparisons = {}

        def check(tmp, fmt=fmt, comparisons=comparisons):
            comparisons.update(check_exported(fmt, tmp, samples, reference, cfg, tolerance,
                                              folded, opset))

        if fmt == "torchscript":
            atomic_write(path, lambda f: write_torchscript(traced, f), check)
        else:
            atomic_write(path, lambda f: write_onnx(traced, samples[0].image, f, opset), check)
        results[fmt] = FormatResult(fmt, path, time.perf_counter() - t0, comparisons)
        step.done(f"{FILE_NAMES[fmt]}: {RUNTIMES[fmt]} matches eager PyTorch "
                  f"(max |dbox| {results[fmt].summary()['max_box_diff_px']:.2g} px, max "
                  f"|dscore| {results[fmt].summary()['max_score_diff']:.2g})")
    conf = settings(cfg)
    report = {
        "config_norms": " ".join(f"{c}={spec.describe()}"
                                 for c, spec in component_specs(cfg).items()),
        "ws_convs_folded": ws_convs,
        "weights": conf.weights, "opset": opset if "onnx" in formats else None,
        "input": {"name": INPUT_NAME, "layout": "(3, H, W) float32, 0-255, INPUT.FORMAT "
                  f"{conf.input_format}, resized to the test size; H and W dynamic"},
        "outputs": {"boxes": "(N, 4) float32 x0 y0 x1 y1 at the input size",
                    "classes": "(N,) int64", "scores": "(N,) float32",
                    "image_size": "(2,) int64 input H, W"},
        "split": SPLIT, "tolerance": dataclasses.asdict(tolerance),
        "versions": _versions(formats),
        "formats": {fmt: r.summary() for fmt, r in results.items()},
        "seconds": round(time.perf_counter() - start, 2)}
    write_json(os.path.join(output_dir, "export.json"), report, indent=1, default=float)
    return report


def _versions(formats) -> Dict[str, str]:
    out = {"torch": torch.__version__}
    if "onnx" in formats:
        import onnx
        import onnxruntime

        out.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    return out


class _Steps:
    """'[2/4] what (12.3s, ETA 10s)' progress lines on the module logger."""

    def __init__(self, total: int, start: float):
        self.total, self.start, self.count = total, start, 0

    def done(self, what: str) -> None:
        from .benchmark.timing import eta

        self.count += 1
        elapsed = time.perf_counter() - self.start
        logger.info("[%d/%d] %s (%.1fs, %s)", self.count, self.total, what, elapsed,
                    eta(self.count, self.total, elapsed))
