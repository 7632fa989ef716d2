#!/usr/bin/env bash
# Fill the wheelhouse (default .whl/ in the repository root, kept out of git) that
# docs/gpu/run_on_gpu.sh installs from on a GPU machine that reaches no package index.
#
# Run it here, where PyPI is reachable. It downloads what gn_det and its [dev] extra need beyond
# the GPU image's own packages (that image ships Python 3.12 with torch, torchvision, numpy,
# pytest, pytest-xdist, timm, hypothesis, onnx, onnxruntime, opencv, matplotlib, tensorboard,
# ...; see the device machine's package list), as x86-64 / CPython 3.12 wheels, builds wheels of
# the pure-Python packages PyPI has only as sources, and adds the detectron2 sdist that
# tools/bootstrap.py installs (the same pinned file: bootstrap checks its sha256). ~15 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=${WHEELS:-.whl}
PY=${PY:-.venv/bin/python}
mkdir -p "$WHEELS"
pip_() { "$PY" -m pip --disable-pip-version-check "$@"; }

# Binary wheels for the GPU machine's Python (3.12, manylinux x86-64), without their
# dependencies: those are on the image (numpy, PyYAML, tqdm, portalocker, packaging, ...).
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pip_ download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$WHEELS" \
    "pycocotools==2.0.11" "faster-coco-eval==1.8.0" "termcolor==3.3.0" "yacs==0.1.8" \
    "iopath==0.1.9" "omegaconf==2.3.1" "hydra-core==1.3.8" "ruff==0.17.6" "setuptools==84.2.1"
# Pure-Python packages published as sources only: built into py3-none-any wheels here.
pip_ wheel -q --no-deps -w "$WHEELS" "fvcore==0.1.5.post20221221" "antlr4-python3-runtime==4.9.3"
# detectron2 v0.6's sources, as bootstrap.py fetches them (it verifies the sha256 it pins).
pip_ download -q --no-deps --no-build-isolation --no-binary=:all: -d "$WHEELS" "pb1-detectron2==0.6"
ls -la "$WHEELS"
du -sh "$WHEELS"
