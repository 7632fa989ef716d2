#!/usr/bin/env python
"""Convert Pascal VOC XML box annotations to one COCO-format JSON.

The command is gn_det.commands.voc_to_coco, also installed as `gn-det-voc-to-coco`."""
from gn_det.commands.voc_to_coco import run

if __name__ == "__main__":
    run()
