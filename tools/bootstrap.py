#!/usr/bin/env python
"""Install gn_det's environment into the running interpreter (what `make setup` calls).

Idempotent: each step checks what is installed and skips itself when satisfied. Steps:
1. the pinned torch / torchvision pair from the registry (never a local CPU wheel whose
   torchvision ops do not load);
2. detectron2: kept if it already imports (a user's own build from git); otherwise the official
   v0.6 Python sources from the sdist ``pb1-detectron2==0.6`` (sha256 pinned), installed unmodified
   as the pure-Python package ``detectron2`` (the sdist lacks ``layers/csrc``, so its own setup.py
   cannot build; gn_det.compat bridges the missing ``_C``);
3. gn_det itself, editable, with its ``[dev]`` extra;
4. a check that ``torchvision.ops.nms`` runs and ``detectron2.modeling`` imports through gn_det.
Any failure exits non-zero with one line that says what to do.
"""
import argparse
import hashlib
import importlib.metadata as md
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

TORCH_PINS = {"torch": "2.15.0", "torchvision": "0.29.2"}
D2_SDIST = "pb1-detectron2==0.6"
D2_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
REPO = Path(__file__).resolve().parents[1]
T0 = time.time()

# Minimal build script for the unmodified detectron2 sources: Python files plus model-zoo configs.
D2_SETUP_PY = textwrap.dedent(
    '''
    from setuptools import find_packages, setup
    setup(
        name="detectron2",
        version="0.6",
        description="detectron2 v0.6 Python sources (from pb1-detectron2), without compiled ops",
        packages=find_packages(include=["detectron2", "detectron2.*"]),
        package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    )
    '''
)

CHECK = textwrap.dedent(
    """
    import torch, torchvision
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2], keep
    """
)
CHECK_D2 = "import gn_det, detectron2.modeling, detectron2.engine, detectron2.evaluation"


class SetupError(SystemExit):
    """A failed step: printed as one line, exit status 1."""

    def __init__(self, msg):
        super().__init__(f"gn_det setup: {msg}")


def step(msg):
    print(f"[setup +{time.time() - T0:5.1f}s] {msg}", flush=True)


def pip(*args):
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    if subprocess.call(cmd) != 0:
        raise SetupError(f"`pip {' '.join(args)}` failed; see pip's output above")


def installed_version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def ensure_torch():
    have = {d: installed_version(d) for d in TORCH_PINS}
    if all(have[d] == v for d, v in TORCH_PINS.items()):
        step(f"torch {have['torch']} / torchvision {have['torchvision']}: already installed")
        return
    step(f"installing torch=={TORCH_PINS['torch']} torchvision=={TORCH_PINS['torchvision']} "
         f"(have {have}); the CUDA build is ~5 GB and also runs on CPU")
    pip("install", *(f"{d}=={v}" for d, v in TORCH_PINS.items()))


def detectron2_importable():
    return subprocess.call([sys.executable, "-c", "import detectron2"],
                           stderr=subprocess.DEVNULL) == 0


def ensure_detectron2():
    if detectron2_importable():
        where = subprocess.check_output(
            [sys.executable, "-c", "import detectron2; print(detectron2.__file__)"], text=True)
        step(f"detectron2 already importable, keeping it: {where.strip()}")
        return
    step(f"installing detectron2 from the sdist {D2_SDIST} (sha256 {D2_SHA256[:12]}...)")
    with tempfile.TemporaryDirectory(prefix="gn_det_d2_") as tmp:
        tmp = Path(tmp)
        req = tmp / "requirements.txt"
        req.write_text(f"{D2_SDIST} --hash=sha256:{D2_SHA256}\n")
        # --no-build-isolation: pip only reads the sdist's metadata, which imports torch.
        pip("download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:",
            "-r", str(req), "-d", str(tmp / "dl"))
        sdists = list((tmp / "dl").glob("*.tar.gz"))
        if len(sdists) != 1:
            raise SetupError(f"expected one sdist in {tmp / 'dl'}, found {sdists}")
        digest = hashlib.sha256(sdists[0].read_bytes()).hexdigest()
        if digest != D2_SHA256:
            raise SetupError(f"{sdists[0].name}: sha256 {digest} != pinned {D2_SHA256}; "
                             "the registry served a different file, refusing to install it")
        src = tmp / "src"
        with tarfile.open(sdists[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.split("/")[1:2] == ["detectron2"]]
            tar.extractall(src, members=members, filter="data")
        (pkg_root,) = list(src.iterdir())
        (pkg_root / "setup.py").write_text(D2_SETUP_PY)
        pip("install", "--no-deps", "--no-build-isolation", str(pkg_root))


def ensure_gn_det():
    # pip resolves quickly when everything is satisfied, so this step is cheap on a rerun.
    step("installing gn_det (editable) with its [dev] extra")
    pip("install", "-q", "-e", f"{REPO}[dev]")


def check():
    step("checking torchvision.ops.nms and detectron2.modeling through gn_det")
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        raise SetupError(
            f"torchvision.ops.nms does not run ({last}). Reinstall the pinned pair with "
            f"`rm -rf .venv && make setup`; never a local torch wheel whose torchvision ops "
            f"do not load (e.g. 2.13.0+cpu).")
    r = subprocess.run([sys.executable, "-c", CHECK_D2], capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        raise SetupError(
            f"detectron2.modeling does not import through gn_det ({last}). Remove a broken "
            f"detectron2 (`{sys.executable} -m pip uninstall detectron2`) and rerun `make setup`.")
    step("environment OK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check-only", action="store_true", help="only run the final check")
    args = ap.parse_args()
    if sys.prefix == sys.base_prefix and not os.environ.get("GN_DET_ALLOW_SYSTEM_PYTHON"):
        raise SetupError(f"{sys.executable} is not a virtual environment; run `make setup`, "
                         "or set GN_DET_ALLOW_SYSTEM_PYTHON=1 to install into it anyway")
    if not args.check_only:
        ensure_torch()
        ensure_detectron2()
        ensure_gn_det()
    check()


if __name__ == "__main__":
    main()
