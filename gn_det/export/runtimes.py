"""Loading an exported file back as its runtime does (RUNNERS, keyed as formats.EXPORT_FORMATS),
as a function image -> Detections: how the export is checked, and how a user runs it."""
from typing import Callable, Dict

import torch

from ..utils.errors import one_line
from .detections import Detections
from .formats import INPUT_NAME, ExportError, check_formats, optional_package
from .tracing import quiet_tracer

Runner = Callable[[torch.Tensor], Detections]


def torchscript_runner(path: str) -> Runner:
    """The TorchScript file loaded with torch.jit.load on CPU."""
    with quiet_tracer():
        module = torch.jit.load(path, map_location="cpu")

    def run(image):
        with torch.no_grad():
            return Detections.from_outputs([o.numpy() for o in module(image)])
    return run


def onnx_runner(path: str) -> Runner:
    """The ONNX file, first validated by onnx.checker, in an ONNX Runtime CPU session."""
    onnx = optional_package("onnx", "onnx")
    ort = optional_package("onnxruntime", "onnx")
    try:
        onnx.checker.check_model(path)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported ONNX model is not valid ONNX: "
                          f"{one_line(e, brief=True)}") from None
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def run(image):
        return Detections.from_outputs(session.run(None, {INPUT_NAME: image.numpy()}))
    return run


# format name -> loader of that format's file.
RUNNERS: Dict[str, Callable[[str], Runner]] = {
    "torchscript": torchscript_runner,
    "onnx": onnx_runner,
    "torchscript_bf16": torchscript_runner,  # bf16 inside, float32 in and out
}


def load_runner(fmt: str, path: str) -> Runner:
    """Load an exported file as its runtime does and return image -> Detections."""
    check_formats([fmt])
    return RUNNERS[fmt](path)
