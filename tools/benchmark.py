#!/usr/bin/env python
"""gn_det's benchmarks (GN, WS, end to end, evaluation, export, precision), one entry point.

The command is gn_det.commands.benchmark, also installed as `gn-det-benchmark`."""
from gn_det.commands.benchmark import run

if __name__ == "__main__":
    run()
