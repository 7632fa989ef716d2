"""Writing the traced model in each export format (WRITERS, keyed as formats.EXPORT_FORMATS):
TorchScript with torch.jit.save, ONNX with torch's TorchScript-based exporter."""
import dataclasses
import warnings
from typing import BinaryIO, Callable, Dict

import torch
from torch import nn

from .formats import INPUT_NAME, ONNX_OPSET, OUTPUT_NAMES
from .tracing import op_error


@dataclasses.dataclass(frozen=True)
class Traced:
    """What every writer starts from: the WS-folded eval-mode model, its trace (TracingAdapter),
    the image it was traced on, and the ONNX opset."""

    model: nn.Module
    module: torch.jit.ScriptModule
    image: torch.Tensor
    opset: int = ONNX_OPSET


def write_torchscript(traced: torch.jit.ScriptModule, f: BinaryIO) -> None:
    torch.jit.save(traced, f)


def write_onnx(traced: torch.jit.ScriptModule, image: torch.Tensor, f: BinaryIO,
               opset: int = ONNX_OPSET) -> None:
    """The traced model as ONNX (torch's TorchScript-based exporter), input height and width
    dynamic; an op the exporter cannot convert ends in one line naming it and its layers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(traced, (image,), f, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes={INPUT_NAME: {1: "height", 2: "width"}})
        except Exception as e:  # noqa: BLE001  torch.onnx raises OnnxExporterError and more
            raise op_error("onnx", e, traced) from None


def _torchscript(t: Traced, f: BinaryIO) -> None:
    write_torchscript(t.module, f)


def _onnx(t: Traced, f: BinaryIO) -> None:
    write_onnx(t.module, t.image, f, t.opset)


# format name -> writer of that format's file from the traced model.
WRITERS: Dict[str, Callable[[Traced, BinaryIO], None]] = {
    "torchscript": _torchscript,
    "onnx": _onnx,
}
