"""gn_det: GN and GN+WS as first-class detectron2 components.

Importing gn_det first bridges detectron2 v0.6's pure-Python install to today's stack
(gn_det.compat, a no-op on a full build), then registers gn_det's components in detectron2's
registries.
"""
from . import compat

compat.apply_all()

from . import layers  # noqa: E402

__version__ = "0.1.0"
