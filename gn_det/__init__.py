"""gn_det: GN and GN+WS as first-class detectron2 components.

Importing gn_det first bridges detectron2 v0.6's pure-Python install to today's stack
(gn_det.compat, a no-op on a full build), then registers gn_det's components in detectron2's
registries.
"""
import warnings

# detectron2 v0.6 decorates helpers with torch.jit.script at import time; torch now warns on each.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

from . import compat  # noqa: E402

compat.apply_all()

from . import layers  # noqa: E402
from . import modeling  # noqa: E402  (registers components)

__version__ = "0.1.0"
