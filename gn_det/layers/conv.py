"""ConvNormSpec and the conv builder every gn_det component uses.

A component's conv layers are described by data (norm kind + WS on/off). `build_conv` turns it
into a detectron2 `Conv2d` or `WSConv2d` with its norm attached. Components reused from
detectron2 (ResNet blocks, FPN, R-CNN heads) take the same data through `norm_arg` (their `norm=`
argument) and `convert_to_ws` (their convs made weight-standardized), so no module branches on
norm strings itself.
"""
import dataclasses
from typing import Callable, Iterable, Optional, Union

from torch import nn

from detectron2.layers import Conv2d

from .norm import NormSpec, build_norm
from .ws_conv import WSConv2d, WSSpec, swap_modules


@dataclasses.dataclass(frozen=True)
class ConvNormSpec:
    """How a component's conv layers are normalized: the norm after them, and WS on their
    weights."""

    norm: NormSpec = NormSpec()
    ws: WSSpec = WSSpec()

    @classmethod
    def of(cls, norm=None, ws=None) -> "ConvNormSpec":
        ws = ws if isinstance(ws, WSSpec) else WSSpec(bool(ws))
        return cls(NormSpec.of(norm), ws)

    def describe(self) -> str:
        return self.norm.describe() + ("+WS" if self.ws else "")


def build_conv(in_channels: int, out_channels: int, kernel_size, *,
               spec: Optional[ConvNormSpec] = None, layer: str = "?",
               activation: Optional[Callable] = None, bias: Optional[bool] = None,
               **conv_kwargs) -> Conv2d:
    """A Conv2d (or WSConv2d when `spec.ws` is on) followed by `spec.norm` and `activation`.
    `bias` defaults to True only without a norm, as detectron2 does. `layer` names the layer in
    error messages (e.g. 'backbone.res3.0.conv2')."""
    spec = spec or ConvNormSpec()
    norm = build_norm(spec.norm, out_channels, layer)
    if bias is None:
        bias = norm is None
    kwargs = dict(bias=bias, norm=norm, activation=activation, **conv_kwargs)
    if spec.ws:
        return WSConv2d(in_channels, out_channels, kernel_size, ws_style=spec.ws.style,
                        ws_eps=spec.ws.eps, **kwargs)
    return Conv2d(in_channels, out_channels, kernel_size, **kwargs)


def norm_arg(spec: NormSpec, layer: str = "?") -> Union[str, Callable[[int], nn.Module]]:
    """What to pass as `norm=` to a detectron2 module: "" for no norm (detectron2 then keeps conv
    biases), else a factory `channels -> module` built by `build_norm`, naming `layer` in errors."""
    spec = NormSpec.of(spec)
    if not spec:
        return ""

    def factory(channels: int) -> nn.Module:
        return build_norm(spec, channels, layer)

    factory.spec = spec  # lets callers and tests see what the factory builds
    return factory


def convert_to_ws(module: nn.Module, ws: WSSpec, exclude: Iterable[nn.Module] = ()) -> nn.Module:
    """Make every 2D conv under `module` (in place, parameters kept, list references updated) a
    WSConv2d per `ws`, except those in `exclude`; a no-op when `ws` is off. Returns `module`."""
    if not ws:
        return module
    skip = {id(m) for m in exclude}

    def make(m):
        plain = isinstance(m, nn.Conv2d) and not isinstance(m, WSConv2d)
        return _as_ws(m, ws) if plain and id(m) not in skip else None

    return swap_modules(module, make)


def _as_ws(conv: nn.Conv2d, ws: WSSpec) -> WSConv2d:
    new = WSConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                   padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                   bias=conv.bias is not None, padding_mode=conv.padding_mode,
                   norm=getattr(conv, "norm", None), activation=getattr(conv, "activation", None),
                   ws_style=ws.style, ws_eps=ws.eps, device=conv.weight.device,
                   dtype=conv.weight.dtype)
    new.weight = conv.weight  # the same Parameter: initialization and freezing carry over
    if conv.bias is not None:
        new.bias = conv.bias
    new.train(conv.training)
    return new
