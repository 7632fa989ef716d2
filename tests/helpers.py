"""Helpers shared by the test files (imported as `from helpers import ...`; conftest.py holds only
pytest set-up and fixtures): repository paths, network comparisons, detectron2's norm names,
process groups and processes, and the tiny toy RetinaNet the export tests build per norm."""
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


# The tiny toy RetinaNet with one norm everywhere, as the export tests build, save and export it.
# norm -> (MODEL.NORMS TYPE, WS, extra opts, input size). LN_CHW is the GN paper's LN,
# GroupNorm(1, C). IN normalizes each channel over its own map, which needs P7 (stride 128)
# larger than 1x1: 160 px.
EXPORT_NORMS = {
    "GN": ("GN", False, [], 64),
    "LN_CHW": ("LN_CHW", False, [], 64),
    "IN": ("IN", False, [], 160),
    "GN+WS": ("GN", True, [], 64),
    "BN": ("BN", False, [], 64),
    "BRN": ("BRN", False, [], 64),
    "FRN": ("FRN", False, [], 64),
    "EvoNormS0": ("EvoNormS0", False, [], 64),
}


def export_model_opts(norm: str):
    """Config opts of the tiny toy model with `norm` everywhere (as the CLI takes them)."""
    from cli_harness import TINY_MODEL_OPTS

    kind, ws, opts, size = EXPORT_NORMS[norm]
    opts = [*TINY_MODEL_OPTS, *opts, "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST",
            str(size)]
    for component in ("BACKBONE", "FPN", "RETINANET_HEAD"):
        opts += [f"MODEL.NORMS.{component}.TYPE", kind, f"MODEL.NORMS.{component}.WS", str(ws)]
    return opts


def tiny_export_model(norm: str):
    """(cfg, model): the tiny toy model with `norm` everywhere, random weights made like trained
    (seed 0), eval mode, CPU."""
    from detectron2.modeling import build_model

    from gn_det.benchmark.export_speed import like_trained
    from gn_det.config import load_cfg

    cfg = load_cfg(TOY_CONFIG, [*export_model_opts(norm), "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    return cfg, like_trained(build_model(cfg))


def save_checkpoint(model, folder) -> str:
    """The model saved as training saves it: folder/model_final.pth (`folder` is created)."""
    from gn_det.checkpoint import AtomicCheckpointer

    folder.mkdir()
    AtomicCheckpointer(model, str(folder)).save("model_final")
    return str(folder / "model_final.pth")
