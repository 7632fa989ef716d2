"""Shared pytest setup: import gn_det first (compat shims), quiet known third-party warnings."""
import warnings

# detectron2 v0.6 decorates a few helpers with torch.jit.script at import time.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

import gn_det  # noqa: E402,F401  (must precede detectron2 submodule imports)
import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config):
    for pattern in [
        "ignore:`torch.jit.script` is deprecated:FutureWarning",
        "ignore::DeprecationWarning:detectron2.*",
        "ignore:torch.meshgrid:UserWarning",
    ]:
        config.addinivalue_line("filterwarnings", pattern)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
