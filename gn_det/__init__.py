"""gn_det: GN and GN+WS as first-class detectron2 components.

Importing gn_det first bridges detectron2 v0.6's pure-Python install to today's stack
(gn_det.compat, a no-op on a full build), then registers gn_det's components in detectron2's
registries. Those are the only global changes an import makes: the compat shims (each listed in
gn_det/compat.py, applied only where its feature is missing) and the registry entries. It sets no
matplotlib backend, logging handler, warning filter or torch setting; the CLIs in tools/ set up
logging for themselves.
"""
from . import compat

with compat.quiet_jit_script_warnings():
    compat.apply_all()
    from . import layers  # noqa: F401
    from . import modeling  # noqa: F401  (registers components)

__version__ = "0.1.0"
