"""Writing the traced model in each export format (WRITERS, keyed as formats.EXPORT_FORMATS):
TorchScript with torch.jit.save, ONNX with torch's TorchScript-based exporter, bf16 TorchScript
traced from the model prepared for bf16 inference and frozen."""
import copy
import dataclasses
import warnings
from typing import BinaryIO, Callable, Dict

import torch
from torch import nn

from ..engine.precision import prepare_for_inference, resolve_precision
from .formats import INPUT_NAME, ONNX_OPSET, OUTPUT_NAMES
from .tracing import op_error, quiet_tracer, trace


@dataclasses.dataclass(frozen=True)
class Traced:
    """What every writer starts from: the WS-folded eval-mode model, its trace (TracingAdapter),
    the image it was traced on, and the ONNX opset."""

    model: nn.Module
    module: torch.jit.ScriptModule
    image: torch.Tensor
    opset: int = ONNX_OPSET


def write_torchscript(traced: torch.jit.ScriptModule, f: BinaryIO) -> None:
    with quiet_tracer():  # without torch's notice that torch.jit is deprecated
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


def trace_bf16(model: nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """A copy of the (WS-folded, eval-mode) model prepared for bf16 inference (channels_last, bf16
    conv weights, autocast inside the model's call: gn_det.engine.precision), traced on `image`
    and frozen (torch.jit.freeze: weights inlined as constants), without the numerics-changing
    folds (conv + BN / mul / add: folded in bf16, the weights would round differently from the
    eager model's), so the graph computes exactly what the eager model in bf16 does. Its outputs
    stay float32: the heads' outputs are cast back before box decoding and NMS."""
    bf16 = resolve_precision("bf16", "cpu", fallback="none")
    traced = trace(prepare_for_inference(copy.deepcopy(model), bf16), image)
    try:
        with quiet_tracer():
            return torch.jit.freeze(traced.eval(), optimize_numerics=False)
    except Exception as e:  # noqa: BLE001  freezing raises RuntimeError and more
        raise op_error("torchscript_bf16", e, traced) from None


def write_torchscript_bf16(model: nn.Module, image: torch.Tensor, f: BinaryIO) -> None:
    """The bf16 TorchScript of `model` (trace_bf16), saved with torch.jit.save."""
    write_torchscript(trace_bf16(model, image), f)


def _torchscript(t: Traced, f: BinaryIO) -> None:
    write_torchscript(t.module, f)


def _onnx(t: Traced, f: BinaryIO) -> None:
    write_onnx(t.module, t.image, f, t.opset)


# format name -> writer of that format's file from the traced model.
WRITERS: Dict[str, Callable[[Traced, BinaryIO], None]] = {
    "torchscript": _torchscript,
    "onnx": _onnx,
    "torchscript_bf16": lambda t, f: write_torchscript_bf16(t.model, t.image, f),
}
