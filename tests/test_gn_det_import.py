"""`import gn_det` (and its trainer, evaluator and study modules) changes nothing global but the
compat shims and detectron2's registries: no matplotlib backend, pyplot, warning filter, logging
handler or torch thread setting. `import gn_det` alone loads neither torch nor detectron2; the
shims and registrations happen as detectron2 loads, whichever is imported first."""
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO


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


def test_detectron2_imported_in_a_child_of_an_import_finds_the_shims():
    """A detectron2 module first imported deep inside another import (here by gn_det.modeling)
    still executes after the shims: the compiled-ops stand-in is in place before detectron2.layers
    needs it."""
    out = run_python("""
        import gn_det.modeling, sys
        import gn_det.compat as compat
        print(all(name in compat.APPLIED or not guard() for name, (guard, _) in
                  compat.SHIMS.items()))
    """)
    assert out.strip() == "True"
