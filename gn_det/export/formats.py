"""The export formats as data (file name, runtime, the optional packages each needs, the
precision it computes in) and the exported graph's interface (input and output names): one entry
here, a writer and a runner add a format."""
import dataclasses
import importlib
from typing import Dict, Tuple

from ..engine.precision import CPU_BF16_FLAGS, cpu_bf16_flags
from ..utils.errors import one_line


class ExportError(ValueError):
    """An export that cannot be made or would not be trusted; one line naming the layer / op /
    format at fault."""


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One exported form: the file it is written to, the runtime that loads it back for the check
    (as the report names it), and the optional packages that runtime needs."""

    file_name: str
    runtime: str
    packages: Tuple[str, ...] = ()
    # What the graph computes in (its outputs are float32 either way); it picks the default
    # tolerance of the check against eager float32 (detections.TOLERANCES).
    precision: str = "fp32"


# Writers: gn_det.export.writers.WRITERS; runners: gn_det.export.runtimes.RUNNERS (same keys).
EXPORT_FORMATS: Dict[str, ExportFormat] = {
    "torchscript": ExportFormat("model.ts", "TorchScript (torch.jit.load)"),
    "onnx": ExportFormat("model.onnx", "ONNX Runtime (CPUExecutionProvider)",
                         ("onnx", "onnxruntime")),
    "torchscript_bf16": ExportFormat("model_bf16.ts", "TorchScript bf16 (torch.jit.load, frozen)",
                                     precision="bf16"),
}
FORMATS = tuple(EXPORT_FORMATS)
# What `--format both` (the default) writes: the float32 forms, which run on any CPU.
DEFAULT_FORMATS = ("torchscript", "onnx")
FILE_NAMES = {name: f.file_name for name, f in EXPORT_FORMATS.items()}
RUNTIMES = {name: f.runtime for name, f in EXPORT_FORMATS.items()}

ONNX_OPSET = 17
INPUT_NAME = "image"
# The flat outputs of the traced RetinaNet, in TracingAdapter's order (its outputs_schema:
# Instances fields sorted by name, then the image size).
OUTPUT_NAMES = ("boxes", "classes", "scores", "image_size")


def check_formats(formats) -> None:
    """One line naming the unknown format names, or an empty list, with the valid ones."""
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ExportError(f"--format {','.join(unknown or formats)}: valid are "
                          f"{', '.join(FORMATS)}")


def optional_package(name: str, fmt: str):
    """The module `name` that format `fmt` needs; onnx and onnxruntime are optional dependencies
    (pip install -e '.[export]'), so a TorchScript export works without them and their absence
    ends in one line."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ExportError(f"--format {fmt} needs the {name} package: pip install -e "
                          f"'.[export]' ({one_line(e, brief=True)})") from None


def format_packages(fmt: str) -> Dict[str, object]:
    """name -> module of every package format `fmt` needs (ExportError naming one missing)."""
    return {name: optional_package(name, fmt) for name in EXPORT_FORMATS[fmt].packages}


def check_available(fmt: str) -> None:
    """A bf16 form is offered only where the CPU has bf16 matrix units (elsewhere bf16 runs
    emulated, slower than float32): one line naming the format otherwise."""
    if EXPORT_FORMATS[fmt].precision == "bf16" and not cpu_bf16_flags():
        raise ExportError(f"--format {fmt}: this CPU has neither {' nor '.join(CPU_BF16_FLAGS)} "
                          f"(no bf16 matrix units), where a bf16 model runs slower than float32; "
                          f"use --format torchscript or onnx")
