"""Which norm an exporter gets wrong: each distinct norm layer of a model exported alone and
compared with eager, so a failed check names the norm at fault instead of only the detections."""
import copy
import io
import warnings
from typing import BinaryIO, Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from detectron2.layers import FrozenBatchNorm2d

from ..layers import timm_norm_types
from ..utils.errors import one_line
from .formats import ONNX_OPSET, optional_package
from .tracing import quiet_tracer

_NORMS = (nn.GroupNorm, nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)  # BRN is a _BatchNorm


def norm_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """One layer per distinct norm configuration (type, groups, channels, eps) of the model,
    by dotted name: what a norm probe exports alone."""
    norms = _NORMS + timm_norm_types()  # FRN / EvoNormS0: timm's, imported only when installed
    seen, out = set(), {}
    for name, module in model.named_modules():
        if isinstance(module, norms):
            weight = getattr(module, "weight", None)  # timm's reprs leave the channels out
            key = (repr(module), None if weight is None else tuple(weight.shape))
            if key not in seen:
                seen.add(key)
                out[name] = module
    return out


def probe_norm(fmt: str, norm: nn.Module, opset: int = ONNX_OPSET,
               size: Tuple[int, int] = (7, 9)) -> float:
    """Largest |difference| between one norm layer (eval mode) and its export in `fmt`, on a
    random feature map: tells which norm an exporter gets wrong."""
    channels = (getattr(norm, "num_channels", None) or getattr(norm, "num_features", None)
                or norm.weight.shape[0])  # timm's FRN / EvoNorm keep only their parameters
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, *size, generator=gen) * 3 + 1
    layer = copy.deepcopy(norm).eval()
    with torch.no_grad(), quiet_tracer():
        expected = layer(x)
        traced = torch.jit.trace(layer, (x,))
    got = PROBE_RUNNERS[fmt](traced, x, opset)
    return float(np.abs(got - expected.numpy()).max())


def _run_torchscript(traced, x: torch.Tensor, opset: int) -> np.ndarray:
    with torch.no_grad():
        return traced(x).numpy()


def _run_onnx(traced, x: torch.Tensor, opset: int) -> np.ndarray:
    ort = optional_package("onnxruntime", "onnx")
    buf = io.BytesIO()
    write_onnx_plain(traced, x, buf, opset)
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})[0]


# format name -> (traced layer, input, opset) -> the layer's output run as that format runs it;
# formats without an entry are not probed.
PROBE_RUNNERS: Dict[str, Callable[[torch.jit.ScriptModule, torch.Tensor, int], np.ndarray]] = {
    "torchscript": _run_torchscript,
    "onnx": _run_onnx,
}


def write_onnx_plain(module, x: torch.Tensor, f: BinaryIO, opset: int = ONNX_OPSET) -> None:
    """One tensor in ("x"), one out: for single layers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), f, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"])


def wrong_norms(fmt: str, model: nn.Module, opset: int = ONNX_OPSET,
                atol: float = 1e-4) -> List[str]:
    """'name (module): max |diff|' for each norm configuration whose lone export differs (none
    for a format without a probe)."""
    bad = []
    if fmt not in PROBE_RUNNERS:
        return bad
    for name, norm in norm_layers(model).items():
        try:
            diff = probe_norm(fmt, norm, opset)
        except Exception as e:  # noqa: BLE001  an exporter failing on the layer names it too
            bad.append(f"{name} ({norm}): {one_line(e, brief=True)}")
            continue
        if not diff <= atol:
            bad.append(f"{name} ({norm}): max |diff| {diff:.3g}")
    return bad
