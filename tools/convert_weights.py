#!/usr/bin/env python
"""Convert torchvision / timm ResNet weights into gn_det's backbone naming.

The command is gn_det.commands.convert_weights, also installed as `gn-det-convert-weights`."""
from gn_det.commands.convert_weights import run

if __name__ == "__main__":
    run()
