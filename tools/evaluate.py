#!/usr/bin/env python
"""Evaluate any detector's COCO results file: COCO AP, P/R/F1 at thresholds, errors that cost AP.

The command is gn_det.commands.evaluate, also installed as `gn-det-evaluate`."""
from gn_det.commands.evaluate import run

if __name__ == "__main__":
    run()
