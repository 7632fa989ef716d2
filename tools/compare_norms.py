#!/usr/bin/env python
"""The norm x images-per-GPU study: train and evaluate a grid of norm presets, tabulate AP.

The command is gn_det.commands.compare_norms, also installed as `gn-det-compare-norms`."""
from gn_det.commands.compare_norms import run

if __name__ == "__main__":
    run()
