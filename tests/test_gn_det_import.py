"""`import gn_det` (and its trainer, evaluator and study modules) changes nothing global but the
compat shims and detectron2's registries: no matplotlib backend, pyplot, warning filter, logging
handler or torch thread setting. `import gn_det` alone loads neither torch nor detectron2; the
shims and registrations happen as detectron2 loads, whichever is imported first."""
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow  # imports in fresh interpreters


def test_importing_gn_det_changes_only_shims_and_registries():
    script = textwrap.dedent("""
        import logging, sys, warnings
        import matplotlib
        matplotlib.use("svg")
        import torch
        import sympy  # torch's dependency adds a warning filter of its own when first imported
        torch.set_num_threads(1)
        filters, handlers = list(warnings.filters), list(logging.getLogger().handlers)
        import gn_det, gn_det.engine, gn_det.evaluation.plots, gn_det.study.ap_plot, gn_det.study
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        assert warnings.filters == filters, [f for f in warnings.filters if f not in filters]
        assert logging.getLogger().handlers == handlers
        assert torch.get_num_threads() == 1
        from detectron2.modeling import BACKBONE_REGISTRY
        assert "build_gn_resnet_fpn_backbone" in BACKBONE_REGISTRY
        print("shims:", ",".join(gn_det.compat.APPLIED))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    applied = r.stdout.strip().split(":", 1)[1].strip()
    assert set(filter(None, applied.split(","))) <= set(__import__("gn_det").compat.SHIMS)


def run_python(script: str) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                       text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_importing_gn_det_loads_neither_torch_nor_detectron2():
    out = run_python("""
        import sys
        import gn_det
        print(sorted(m for m in ("torch", "detectron2", "cv2", "matplotlib") if m in sys.modules))
    """)
    assert out.strip() == "[]"


# detectron2 loaded before gn_det (as a user's script may do on a full build): the shims are put in
# place from compat.py's file alone, without importing the gn_det package.
_D2_BEFORE_GN_DET = """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("standalone_compat", "gn_det/compat.py")
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    compat.apply_all()
    import detectron2.modeling
    assert "gn_det" not in sys.modules
    import gn_det
"""


@pytest.mark.parametrize("first", ["gn_det", "detectron2"])
def test_components_register_whichever_is_imported_first(first):
    setup = "import gn_det; import detectron2.modeling" if first == "gn_det" else _D2_BEFORE_GN_DET
    out = run_python(textwrap.dedent(setup) + textwrap.dedent("""
        from detectron2.modeling import BACKBONE_REGISTRY
        print("build_gn_resnet_fpn_backbone" in BACKBONE_REGISTRY)
    """))
    assert out.strip().splitlines()[-1] == "True"


def test_each_shim_applies_as_the_module_it_bridges_loads():
    """Shims of the environment apply as detectron2 loads, even deep inside another import (here
    gn_det.modeling's); a shim of one detectron2 module waits for that module, so loading the
    model does not load detectron2's model zoo or COCO evaluator. Once loaded, each works."""
    out = run_python("""
        import sys
        import gn_det.modeling
        import gn_det.compat as compat
        deferred = {name for name, _ in compat.MODULE_SHIMS.values()}
        due = [n for n, (guard, _) in compat.SHIMS.items() if n not in deferred and guard()]
        print(all(n in compat.APPLIED for n in due),
              any(m in sys.modules for m in compat.MODULE_SHIMS))
        import detectron2.model_zoo, detectron2.evaluation.coco_evaluation as coco_evaluation
        from pycocotools.cocoeval import COCOeval
        detectron2.model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
        print(compat.has_compiled_ops() or coco_evaluation.COCOeval_opt is COCOeval)
    """)
    assert out.split() == ["True", "False", "True"]
