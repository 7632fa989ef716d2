#!/usr/bin/env python
"""Train or evaluate a detector with GN / GN+WS components (detectron2's train_net flags).

The command is gn_det.commands.train_net, also installed as `gn-det-train-net`."""
from gn_det.commands.train_net import run

if __name__ == "__main__":
    run()
