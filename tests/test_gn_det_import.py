"""`import gn_det` (and its trainer, evaluator and study modules) changes nothing global but the
compat shims and detectron2's registries: no matplotlib backend, pyplot, warning filter, logging
handler or torch thread setting."""
import subprocess
import sys
import textwrap

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
