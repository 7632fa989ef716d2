"""Checkpoints and pretrained weights: files read without running code (safe_load), state-dict
keys summarised, renamed and compared (keys), torchvision-naming ResNet and timm ResNetV2 / BiT
weights converted into gn_det's naming (resnet_weights, bit_weights, convert), and the atomic,
checked checkpointer the trainer uses (checkpointer)."""
from .checkpointer import AtomicCheckpointer
from .convert import convert_weights_file
from .keys import summarize_keys
from .safe_load import CheckpointError
from .weights_file import ConversionReport, WeightsError

__all__ = ["AtomicCheckpointer", "CheckpointError", "ConversionReport", "WeightsError",
           "convert_weights_file", "summarize_keys"]
