"""ConvNormSpec and build_conv: the one conv builder every gn_det component calls.

A component's conv layers are described by data (norm kind + WS on/off), and this builder turns
that into a detectron2 `Conv2d` or a `WSConv2d` with its norm attached, so no module branches on
norm strings itself.
"""
import dataclasses
from typing import Callable, Optional

from detectron2.layers import Conv2d

from .norm import NormSpec, build_norm
from .ws_conv import WSConv2d, WSSpec


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
        return (self.norm.type or "none") + ("+WS" if self.ws else "")


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
