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


@pytest.fixture
def tiny_train_opts(tiny_shapes, tmp_path):
    """opts turning the toy R-18 RetinaNet config into a seconds-long CPU run on tiny_shapes."""
    ds = tiny_shapes
    return ["DATASETS.COCO_FORMAT",
            str([["tiny_train", f"{ds}/annotations/train.json", f"{ds}/train"],
                 ["tiny_val", f"{ds}/annotations/val.json", f"{ds}/val"]]),
            "DATASETS.TRAIN", "('tiny_train',)", "DATASETS.TEST", "('tiny_val',)",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
            "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1",
            "MODEL.NORMS.BACKBONE.TYPE", "GN", "MODEL.NORMS.FPN.TYPE", "GN",
            "MODEL.NORMS.RETINANET_HEAD.TYPE", "GN", "MODEL.NORMS.GN.NUM_GROUPS", "8",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2",
            "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out")]
