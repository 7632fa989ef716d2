#!/usr/bin/env python
"""Show where a detector fails: its worst images with TP / FP / FN and each FP's kind.

The command is gn_det.commands.show_errors, also installed as `gn-det-show-errors`."""
from gn_det.commands.show_errors import run

if __name__ == "__main__":
    run()
