"""Tracing the WS-folded model as detectron2's export does (TracingAdapter + torch.jit.trace),
and naming the layers that call an op, so an exporter's failure on an op names its layer."""
import contextlib
import copy
import re
import warnings
from typing import List, Tuple

import torch
from torch import nn

from detectron2.export import TracingAdapter

from ..layers import WSConv2d, fold_ws
from ..utils.errors import one_line
from .formats import OUTPUT_NAMES, ExportError

# TracingAdapter's names of the Instances fields -> the exported graph's output names.
_FIELDS = {"pred_boxes": "boxes", "pred_classes": "classes", "scores": "scores"}


def fold_for_export(model: nn.Module) -> Tuple[nn.Module, int]:
    """A WS-folded copy of the model in eval mode, and how many WS convs were folded."""
    count = sum(isinstance(m, WSConv2d) for m in model.modules())
    return fold_ws(copy.deepcopy(model)).eval(), count


def trace(model: nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """detectron2's TracingAdapter around the eval-mode model, traced on one image. The adapter
    is put in eval mode too: a fresh nn.Module trains, and exporters restore the mode they found
    on the module they get, which would switch the model back to training."""
    adapter = TracingAdapter(model, [{"image": image}]).eval()
    try:
        with torch.no_grad(), quiet_tracer():
            traced = torch.jit.trace(adapter, (image,), check_trace=False)
    except Exception as e:  # noqa: BLE001  the tracer raises RuntimeError and more
        raise ExportError(f"torch.jit.trace failed: {one_line(e, brief=True)}") from None
    names = _output_names(adapter.outputs_schema)
    if tuple(names) != OUTPUT_NAMES:
        raise ExportError(f"the traced model returns {names}, expected {list(OUTPUT_NAMES)}")
    return traced


@contextlib.contextmanager
def quiet_tracer():
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


def op_error(fmt: str, exc: BaseException, traced) -> ExportError:
    """An exporter's failure as one line naming the op it could not convert and the layers of
    the traced model that call it ('op aten::erfinv in head.cls_subnet.2')."""
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
