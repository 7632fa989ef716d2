#!/usr/bin/env python
"""Export a trained gn_det detector to TorchScript and / or ONNX, checked against eager PyTorch.

The command is gn_det.commands.export_model, also installed as `gn-det-export-model`."""
from gn_det.commands.export_model import run

if __name__ == "__main__":
    run()
