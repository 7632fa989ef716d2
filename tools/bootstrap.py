#!/usr/bin/env python
"""Install gn_det's environment into the running interpreter (what `make setup` calls).

Idempotent: each step checks what is installed and skips itself when satisfied. Steps:
1. torch / torchvision: a venv that already holds a tested pair (``tools/torch-pairs.txt``) is
   kept; otherwise the newest listed pair that this environment's pip allows (its constraints,
   Python and indexes) is installed, with one line saying which and why (never a local CPU wheel
   whose torchvision ops do not load);
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

PAIRS_FILE = Path(__file__).resolve().parent / "torch-pairs.txt"
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
NMS_OK = "gn_det setup: nms ok"


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


def read_pairs(path=PAIRS_FILE):
    """The tested pairs, newest first: [{"torch": "2.15.0", "torchvision": "0.29.2"}, ...]."""
    pairs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pair = dict(req.split("==", 1) for req in line.split() if "==" in req)
        if sorted(pair) != ["torch", "torchvision"] or len(line.split()) != 2:
            raise SetupError(f"{path}:{n}: expected `torch==X torchvision==Y`, got {line!r}")
        pairs.append(pair)
    if not pairs:
        raise SetupError(f"{path}: lists no torch / torchvision pair")
    return pairs


def public(version):
    """'2.14.1+cu130' -> '2.14.1': the local build tag is not part of the tested pair."""
    return version.split("+", 1)[0] if version else None


def pair_text(pair):
    return f"{pair['torch']} / {pair['torchvision']}"


def refusal(pip_output):
    """Why pip refused a pair, in a few words, from its resolver's output."""
    lines = [ln.strip() for ln in pip_output.splitlines()]
    constraints = [ln.split("(constraint)", 1)[1].strip() for ln in lines if "(constraint)" in ln]
    if constraints:
        return f"refused by a pip constraint ({', '.join(constraints)})"
    missing = [ln.split("for", 1)[1].strip() for ln in lines
               if ln.startswith("ERROR: No matching distribution found for")]
    if missing:
        return f"not available to this Python / platform from pip's indexes ({', '.join(missing)})"
    errors = [ln[len("ERROR: "):] for ln in lines if ln.startswith("ERROR: ")]
    return f"refused by pip ({(errors or lines or ['no output'])[-1]})"


def pip_allows(pair):
    """(True, "") if pip would install this exact pair here, else (False, why). A dry run with
    --no-deps only resolves the two pins (seconds, no download of the wheels themselves)."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run",
           "--no-deps", *(f"{d}=={v}" for d, v in pair.items())]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return (True, "") if r.returncode == 0 else (False, refusal(r.stdout + r.stderr))


def choose_pair(pairs):
    """The newest pair pip allows, and the one line that says why it was chosen."""
    refused = []
    for pair in pairs:
        ok, why = pip_allows(pair)
        if ok:
            if not refused:
                return pair, f"installing the newest tested pair {pair_text(pair)}"
            skipped = "; ".join(f"torch {p['torch']} is {w}" for p, w in refused)
            return pair, f"{skipped}; installing the tested pair {pair_text(pair)}"
        refused.append((pair, why))
    tried = "; ".join(f"{pair_text(p)}: {w}" for p, w in refused)
    raise SetupError(f"no tested torch / torchvision pair from {PAIRS_FILE.name} can be installed "
                     f"here ({tried}). Allow one of them (e.g. loosen pip's constraint) or install "
                     f"your own torch and detectron2 and run `pip install -e .`")


def ensure_torch(pairs=None):
    pairs = pairs or read_pairs()
    have = {d: installed_version(d) for d in ("torch", "torchvision")}
    for pair in pairs:
        if all(public(have[d]) == v for d, v in pair.items()):
            step(f"torch {have['torch']} / torchvision {have['torchvision']}: a tested pair, "
                 "already installed; keeping it")
            return pair
    pair, why = choose_pair(pairs)
    step(f"{why} (have torch {have['torch']}, torchvision {have['torchvision']}); the CUDA "
         "build is ~5 GB and also runs on CPU")
    pip("install", *(f"{d}=={v}" for d, v in pair.items()))
    return pair


def detectron2_location():
    """Where `import detectron2` finds it in this environment, or None if it does not import."""
    r = subprocess.run([sys.executable, "-c", "import detectron2; print(detectron2.__file__)"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_detectron2():
    where = detectron2_location()
    if where:
        step(f"detectron2 already importable, keeping it: {where}")
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


def setup_stamp():
    """What the editable install depends on: this checkout's path, its setup.py and the commands
    it installs as console scripts (one per gn_det/commands module)."""
    commands = ",".join(sorted(p.stem for p in (REPO / "gn_det" / "commands").glob("*.py")))
    return f"{REPO} {hashlib.sha256((REPO / 'setup.py').read_bytes()).hexdigest()} {commands}"


def ensure_gn_det():
    """pip install -e .[dev], skipped when this environment's stamp says it was done for this
    checkout and setup.py (pip's no-op resolve costs seconds on every `make test` / `make demo`)."""
    stamp = Path(sys.prefix) / "gn_det-setup.stamp"
    if installed_version("gn_det") and stamp.is_file() \
            and stamp.read_text().strip() == setup_stamp():
        step("gn_det (editable) with its [dev] extra: already installed for this checkout")
        return
    step("installing gn_det (editable) with its [dev] extra")
    pip("install", "-q", "-e", f"{REPO}[dev]")
    stamp.write_text(setup_stamp() + "\n")


def check():
    """Both checks in one interpreter (torch imports once): nms first, then detectron2 through
    gn_det; NMS_OK on stdout tells which of the two failed."""
    step("checking torchvision.ops.nms and detectron2.modeling through gn_det")
    script = f"{CHECK}\nprint({NMS_OK!r}, flush=True)\n{CHECK_D2}\n"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        if NMS_OK not in r.stdout:
            raise SetupError(
                f"torchvision.ops.nms does not run ({last}). Reinstall a tested pair with "
                f"`rm -rf .venv && make setup`; never a local torch wheel whose torchvision ops "
                f"do not load (e.g. 2.13.0+cpu).")
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
