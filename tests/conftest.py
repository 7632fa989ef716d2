"""Shared pytest setup: import gn_det first (compat shims), quiet known third-party warnings."""
import warnings

# detectron2 v0.6 decorates a few helpers with torch.jit.script at import time.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated",
                        category=FutureWarning)

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


def assert_same_network(ours, theirs, size=64):
    """Same parameter values (in state-dict order), same requires_grad, and bit-equal outputs on
    one random image: `ours` is `theirs`, built another way."""
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name
    assert ([p.requires_grad for p in ours.parameters()]
            == [p.requires_grad for p in theirs.parameters()])
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = theirs(x)
        for name, feature in ours(x).items():
            assert torch.equal(feature, expected[name]), name


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
TOY_CONFIG = str(REPO / "configs/toy/Base-RetinaNet-R18-Shapes.yaml")


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A tiny toy shapes dataset (64 px; 8 train, 4 val images), generated once per session."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("shapes")
    subprocess.run([sys.executable, str(REPO / "datasets/make_shapes.py"), "--out", str(out),
                    "--train", "8", "--val", "4", "--size", "64", "--quiet"], check=True)
    return out


def load_tool(name: str):
    """A tools/ script as a module (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_train_opts(tiny_shapes, tmp_path):
    """opts turning the toy R-18 RetinaNet config into a seconds-long CPU run on tiny_shapes
    (6 iterations, checkpoints every 2), as test_bad_inputs' cases run it (cli_harness)."""
    from cli_harness import tiny_train_opts as opts_for

    opts = opts_for(tiny_shapes, tmp_path / "out")
    return opts[:-2] + ["SOLVER.MAX_ITER", "6", "OUTPUT_DIR", str(tmp_path / "out")]



@__import__("contextlib").contextmanager
def process_group_of_one(directory):
    """A one-process gloo group while in the block (what building SyncBN needs)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{directory}/pg", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def detectron2_norm_names():
    """The names the installed detectron2's get_norm knows: the string keys of the dict in its
    source (so a name added upstream shows up in the tests that use this list)."""
    import ast
    import inspect
    import textwrap

    from detectron2.layers import get_norm

    tree = ast.parse(textwrap.dedent(inspect.getsource(get_norm)))
    names = sorted({k.value for d in ast.walk(tree) if isinstance(d, ast.Dict) for k in d.keys
                    if isinstance(k, ast.Constant) and isinstance(k.value, str)})
    assert {"BN", "GN"} <= set(names), names  # the source was read
    for name in names:  # and each is a name get_norm builds, not some other string
        get_norm(name, 32)
    return names


D2_NORM_NAMES = detectron2_norm_names()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for --dist-url tcp://127.0.0.1:PORT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_with_children(popens) -> None:
    """Kill the commands still running and every process they started (when a test fails or
    times out, nothing is left behind)."""
    import psutil

    for popen in popens:
        if popen.poll() is None:
            parent = psutil.Process(popen.pid)
            for p in parent.children(recursive=True) + [parent]:
                with __import__("contextlib").suppress(psutil.NoSuchProcess):
                    p.kill()
            popen.wait()
