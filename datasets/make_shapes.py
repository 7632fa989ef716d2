#!/usr/bin/env python
"""Generate the toy shapes detection dataset (COCO boxes and masks), seeded.

The command is gn_det.commands.make_shapes, also installed as `gn-det-make-shapes`."""
from gn_det.commands.make_shapes import run

if __name__ == "__main__":
    run()
