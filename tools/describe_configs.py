#!/usr/bin/env python
"""What each shipped config builds: norms per component and parameter counts.

The command is gn_det.commands.describe_configs, also installed as `gn-det-describe-configs`."""
from gn_det.commands.describe_configs import run

if __name__ == "__main__":
    run()
