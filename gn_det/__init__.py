"""gn_det: GN and GN+WS as first-class detectron2 components.

Importing gn_det is light: it loads neither torch nor detectron2. It prepares two global changes
that happen when detectron2 itself loads (gn_det.import_hooks): the compat shims that bridge
detectron2 v0.6's pure-Python install to today's stack (gn_det.compat, each applied only where
its feature is missing, so a no-op on a full build), and gn_det's components in detectron2's
registries. It sets no matplotlib backend, logging handler, warning filter or torch setting; the
CLIs set up logging for themselves.
"""
from . import import_hooks

import_hooks.install()

__version__ = "0.1.0"
