"""Memory-layout test shared by the layers that pick kernels by it."""
import torch


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4D tensor laid out NHWC (channels_last) and not also NCHW-contiguous (as 1x1 maps are)."""
    return x.dim() == 4 and not x.is_contiguous() \
        and x.is_contiguous(memory_format=torch.channels_last)
