"""Helpers shared by the test files (imported as `from helpers import ...`; conftest.py holds only
pytest set-up and fixtures): repository paths, network comparisons, detectron2's norm names,
process groups and processes."""
import ast
import contextlib
import inspect
import socket
import textwrap
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIG = str(REPO / "configs/toy/Base-RetinaNet-R18-Shapes.yaml")
SHARED_DATA = REPO.parent / "shared" / "data"


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


@contextlib.contextmanager
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
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            popen.wait()
