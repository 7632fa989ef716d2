#!/usr/bin/env python
"""Train or evaluate a detector from a LazyConfig (detectron2's lazyconfig_train_net flags).

The command is gn_det.commands.lazy_train_net, also installed as `gn-det-lazy-train-net`."""
from gn_det.commands.lazy_train_net import run

if __name__ == "__main__":
    run()
