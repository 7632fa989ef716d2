"""The device acceptance suite's set-up: which device it runs on (`--device`, else the
GN_DET_TEST_DEVICE environment variable, else cpu), as the session fixture `device`.

`make test` runs the suite on CPU; `make test-device DEVICE=cuda` (or
`pytest tests --device cuda`) runs the same tests on CUDA (`--device` is declared in
tests/conftest.py; GN_DET_TEST_DEVICE works too). A device that is asked for but
absent ends the run in one line instead of skipping every test. On CPU each test runs with one
torch thread: the tests time nothing, and on a shared machine two threads waiting on each other
at every parallel region ran the suite several times slower (the benchmark's quick run: 250 s
with 2 threads, 21 s with 1, at load 4-5 on 2 cores).
"""
import os

import pytest
import torch

ENV = "GN_DET_TEST_DEVICE"


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The device under test, checked to exist."""
    name = request.config.getoption("device", default=None) or os.environ.get(ENV) or "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        pytest.exit(f"--device / {ENV}={name!r}: not a torch device; valid: cpu, cuda, cuda:N",
                    returncode=4)
    if dev.type not in ("cpu", "cuda"):
        pytest.exit(f"--device / {ENV}={name!r}: the device suite runs on cpu or cuda",
                    returncode=4)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.exit(f"--device / {ENV}={name!r}: torch.cuda.is_available() is False on this "
                    f"machine (torch {torch.__version__}); run with --device cpu", returncode=4)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        pytest.exit(f"--device / {ENV}={name!r}: this machine has "
                    f"{torch.cuda.device_count()} CUDA device(s)", returncode=4)
    return dev


@pytest.fixture(autouse=True)
def _one_cpu_thread(device):
    """One torch thread per CPU test (module docstring), restored afterwards."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
