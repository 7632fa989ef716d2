#!/usr/bin/env python
"""Draw a dataset's ground-truth boxes with their class names, to check a conversion by eye.

The command is gn_det.commands.visualize_data, also installed as `gn-det-visualize-data`."""
from gn_det.commands.visualize_data import run

if __name__ == "__main__":
    run()
