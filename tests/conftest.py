"""Shared pytest set-up: import gn_det first (compat shims), quiet known third-party warnings,
seed torch per test, and the session's tiny toy dataset. Helpers the test files share live in
helpers.py."""
import subprocess
import sys
import warnings

# detectron2 v0.6 decorates a few helpers with torch.jit.script at import time.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated",
                        category=FutureWarning)

import gn_det  # noqa: E402,F401  (must precede detectron2 submodule imports)
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import REPO  # noqa: E402


def pytest_addoption(parser):
    """--device for the device acceptance suite (tests/device/conftest.py reads it): declared here
    so that `pytest tests --device cuda` works as well as `pytest tests/device --device cuda`."""
    parser.addoption("--device", default=None,
                     help="device the tests/device suite runs on: cpu or cuda[:N] (default: "
                          "$GN_DET_TEST_DEVICE, else cpu)")


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


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A tiny toy shapes dataset (64 px; 8 train, 4 val images), generated once per session."""
    out = tmp_path_factory.mktemp("shapes")
    subprocess.run([sys.executable, str(REPO / "datasets/make_shapes.py"), "--out", str(out),
                    "--train", "8", "--val", "4", "--size", "64", "--quiet"], check=True)
    return out


@pytest.fixture
def tiny_train_opts(tiny_shapes, tmp_path):
    """opts turning the toy R-18 RetinaNet config into a seconds-long CPU run on tiny_shapes
    (6 iterations, checkpoints every 2), as test_bad_inputs' cases run it (cli_harness)."""
    from cli_harness import tiny_train_opts as opts_for

    opts = opts_for(tiny_shapes, tmp_path / "out")
    return opts[:-2] + ["SOLVER.MAX_ITER", "6", "OUTPUT_DIR", str(tmp_path / "out")]
