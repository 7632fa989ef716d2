"""gn_det.compat: every shim's guard both ways, and the live environment's shims behave."""
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from gn_det import compat


def test_missing_C_guard_both_ways():
    assert compat.needs_missing_C(c_spec_found=False, d2_found=True)
    assert not compat.needs_missing_C(c_spec_found=True, d2_found=True)  # full build from git
    assert not compat.needs_missing_C(c_spec_found=False, d2_found=False)


def test_missing_C_fallback_names_op_and_feature():
    fallback = compat._MissingC("detectron2._C")
    with pytest.raises(compat.MissingCompiledOp, match=r"deform_conv_forward.*deformable conv"):
        fallback.deform_conv_forward  # noqa: B018  (the attribute access is what raises)
    with pytest.raises(compat.MissingCompiledOp, match=r"box_iou_rotated.*rotated boxes"):
        fallback.box_iou_rotated  # noqa: B018
    assert not hasattr(fallback, "__file__")  # dunder probes stay plain AttributeErrors


def test_pil_linear_guard_both_ways():
    pillow10 = types.SimpleNamespace(BILINEAR=2)
    pillow9 = types.SimpleNamespace(BILINEAR=2, LINEAR=2)
    v06_src = "def __init__(self, src_rect, output_size, interp=Image.LINEAR, fill=0):"
    main_src = "def __init__(self, src_rect, output_size, interp=Image.BILINEAR, fill=0):"
    assert compat.needs_pil_linear(pillow10, v06_src)
    assert not compat.needs_pil_linear(pillow10, main_src)
    assert not compat.needs_pil_linear(pillow9, v06_src)


def test_pkg_resources_guard_both_ways():
    v06_src = "import os\nimport pkg_resources\n"
    main_src = "import os\nfrom importlib import resources\n"
    assert compat.needs_pkg_resources(False, v06_src)
    assert not compat.needs_pkg_resources(False, main_src)
    assert not compat.needs_pkg_resources(True, v06_src)


def test_numpy_alias_guard_both_ways():
    numpy124 = types.SimpleNamespace(bool_=bool)
    numpy123 = types.SimpleNamespace(int=int, float=float, bool=bool)
    v06_src = ["x = np.zeros(3, dtype=np.int)\ny = a.astype(np.float)\nz = np.bool_"]
    main_src = ["x = np.zeros(3, dtype=int)\ny = a.astype(np.float32)\nz = np.bool_"]
    assert compat.missing_numpy_aliases(numpy124, v06_src) == ["float", "int"]
    assert compat.missing_numpy_aliases(numpy124, main_src) == []
    assert compat.missing_numpy_aliases(numpy123, v06_src) == []


def test_coco_fast_eval_guard_both_ways():
    assert compat.needs_coco_fast_eval_fallback(compiled=False)
    assert not compat.needs_coco_fast_eval_fallback(compiled=True)


V06_EXPORT_INIT = "from .api import *\nfrom .flatten import TracingAdapter\n"
MAIN_EXPORT_INIT = ("from .flatten import TracingAdapter\ntry:\n    from caffe2.proto import "
                    "caffe2_pb2 as _tmp\nexcept ImportError:\n    pass\nelse:\n"
                    "    from .api import *\n")
EXPORT_API = "import torch\nfrom caffe2.proto import caffe2_pb2\nfrom torch import nn\n"


def test_export_caffe2_guard_both_ways():
    assert compat.needs_export_without_caffe2(False, V06_EXPORT_INIT, EXPORT_API)
    assert not compat.needs_export_without_caffe2(False, MAIN_EXPORT_INIT, EXPORT_API)  # main
    assert not compat.needs_export_without_caffe2(True, V06_EXPORT_INIT, EXPORT_API)  # caffe2
    assert not compat.needs_export_without_caffe2(False, V06_EXPORT_INIT, "import torch\n")


@pytest.mark.slow
def test_detectron2_export_imports_without_faking_caffe2():
    """TracingAdapter & co. import from detectron2.export; caffe2 stays absent, and a caffe2-only
    name says it needs caffe2 (in a fresh process: the shim imports nothing until used)."""
    script = textwrap.dedent("""
        import sys
        import gn_det
        import detectron2.export as export
        shimmed = "export_caffe2" in gn_det.compat.APPLIED  # v0.6; main's own package otherwise
        if shimmed:
            assert "detectron2.export.flatten" not in sys.modules  # nothing imported until used
        from detectron2.export import TracingAdapter, dump_torchscript_IR
        from detectron2.export.flatten import TracingAdapter as same
        assert TracingAdapter is same and callable(dump_torchscript_IR)
        from detectron2.export import scripting_with_instances  # noqa: F401
        assert "caffe2" not in sys.modules
        try:
            from detectron2.export import Caffe2Tracer  # noqa: F401
        except ImportError as e:  # main without caffe2 does not define it at all
            assert not shimmed or "needs caffe2" in str(e), e
        else:
            assert not shimmed  # a real caffe2 is installed
        print("applied" if shimmed else "not needed")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("applied", "not needed")


def test_live_shims_match_their_guards():
    """In this environment each applied shim has taken effect, and apply_all is idempotent."""
    applied = compat.apply_all()
    assert compat.apply_all() == applied
    from PIL import Image

    import detectron2.evaluation.coco_evaluation as ce
    import detectron2.layers  # noqa: F401  (imports `_C` users)

    if "pil_linear" in applied:
        assert Image.LINEAR == Image.BILINEAR
    if "numpy_aliases" in applied:
        assert np.int is int
    if "coco_fast_eval" in applied:
        from pycocotools.cocoeval import COCOeval

        assert ce.COCOeval_opt is COCOeval
        assert not compat.has_compiled_ops()
    else:
        assert compat.has_compiled_ops()
    if "pkg_resources" in applied:
        import sys

        from detectron2 import model_zoo

        assert "pkg_resources" not in sys.modules or hasattr(sys.modules["pkg_resources"],
                                                             "require")
        assert model_zoo.get_config_file("Base-RetinaNet.yaml").endswith("Base-RetinaNet.yaml")


def test_detectron2_data_and_modeling_import_through_gn_det():
    import detectron2.data  # noqa: F401  (Image.LINEAR at import time in v0.6)
    import detectron2.modeling  # noqa: F401
    from detectron2.data import build

    build.print_instances_class_histogram(
        [{"annotations": [{"category_id": 0, "iscrowd": 0}]}], ["a"])  # np.int in v0.6


def test_missing_C_fallback_answers_collect_env():
    fallback = compat._MissingC("detectron2._C")
    assert "without compiled ops" in fallback.get_compiler_version()
    assert not fallback.has_cuda()
    if "missing_C" in compat.APPLIED:
        from detectron2.utils.collect_env import collect_env_info

        assert "without compiled ops" in collect_env_info()
