"""gn_det: Group Normalization and GN + Weight Standardization as first-class detectron2 components.

detectron2 itself is not a dependency here: it is not on PyPI under its own name. `make setup`
installs it (tools/bootstrap.py); users with their own build keep it and run `pip install -e .`.
"""
from pathlib import Path

from setuptools import find_packages, setup

# Every module of gn_det/commands is a command `gn-det-<name>` (its `run`), as tools/<name>.py
# runs it.
COMMANDS = sorted(p.stem for p in (Path(__file__).parent / "gn_det" / "commands").glob("*.py")
                  if p.stem != "__init__")
ALIASES = {"train": "train_net", "export": "export_model"}  # the two commands most runs use

setup(
    name="gn_det",
    version="0.1.0",
    description="GN and GN+WS backbones, FPN and heads for detectron2, with P/R evaluation",
    python_requires=">=3.9",
    # configs/ ships inside the package as gn_det.model_zoo.configs (gn_det.model_zoo finds it
    # in a wheel and in an editable install alike), as detectron2 ships its model-zoo configs.
    packages=find_packages(include=["gn_det", "gn_det.*"]) + ["gn_det.model_zoo.configs"],
    package_dir={"gn_det.model_zoo.configs": "configs"},
    package_data={"gn_det.model_zoo.configs": ["*.yaml", "**/*.yaml", "**/*.py"]},
    entry_points={"console_scripts": [
        f"gn-det-{name.replace('_', '-')} = gn_det.commands.{command}:run"
        for name, command in [(c, c) for c in COMMANDS] + list(ALIASES.items())]},
    install_requires=[
        # detectron2's own runtime requirements (v0.6 and main), minus its build-only tools.
        "numpy",
        "Pillow>=7.1",
        "matplotlib",
        "pycocotools>=2.0.2",
        # gn_det.evaluation's default COCOeval engine (its evaluate() is followed per class chunk,
        # tested against pycocotools on 1.8)
        "faster-coco-eval>=1.8,<1.9",
        "opencv-python-headless",
        "termcolor>=1.1",
        "yacs>=0.1.8",
        "tabulate",
        "cloudpickle",
        "tqdm>4.29.0",
        "tensorboard",
        "fvcore>=0.1.5,<0.1.6",
        "iopath>=0.1.7,<0.1.10",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        "PyYAML",
        "psutil",
    ],
    extras_require={
        # tools/export_model.py and `benchmark.py export` (tested: onnx 1.23.2, onnxruntime
        # 1.32.0 with torch 2.14.1); the tests run them, so [dev] pulls them too.
        "export": ["onnx", "onnxruntime"],
        "dev": ["pytest", "pytest-xdist", "timm", "hypothesis", "ruff", "onnx", "onnxruntime"],
    },
)
