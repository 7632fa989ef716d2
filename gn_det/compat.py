"""Bridges between detectron2 v0.6's pure-Python sources and today's stack.

Each shim is a pair: a guard that detects the *feature* (never a version string, since detectron2
main still reports 0.6) and an apply step. On a full detectron2 build from git main every guard is
false and nothing is touched. gn_det.import_hooks applies them as detectron2 loads
(`apply_all(defer_module_shims=True)` as `detectron2` itself executes, `shims_for` as each
patched module executes); `apply_all()` applies them all at once.

| shim           | what it bridges                                  | upstream fix it mirrors    |
|----------------|--------------------------------------------------|----------------------------|
| missing_C      | `from detectron2 import _C` without compiled ops | building detectron2's csrc |
| pil_linear     | `Image.LINEAR`, removed in Pillow 10             | main: `Image.BILINEAR`     |
| pkg_resources  | `model_zoo` imports pkg_resources (setuptools<81)| main: importlib            |
| numpy_aliases  | `np.int`/`np.float`/... removed in numpy 1.24    | main: builtin `int`/`float`|
| coco_fast_eval | COCOEvaluator's fast path needs `_C`             | use_fast_impl=False        |
| export_caffe2  | `import detectron2.export` needs caffe2          | main: `.api` only w/ caffe2|

Not a shim: multi-process CPU runs (gn_det.engine.launch) take gn_det's gloo launcher on every
detectron2, because main's own gloo fallback gives each process all the cores.
"""
import contextlib
import importlib.util
import logging
import re
import sys
import types
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

logger = logging.getLogger(__name__)

# What each compiled op is used for, so the error names the feature, not only the symbol.
_C_OP_FEATURES = {
    "box_iou_rotated": "rotated boxes (pairwise_iou_rotated)",
    "nms_rotated": "rotated boxes (nms_rotated)",
    "roi_align_rotated_forward": "rotated boxes (ROIAlignRotated)",
    "roi_align_rotated_backward": "rotated boxes (ROIAlignRotated)",
    "deform_conv_forward": "deformable conv (DeformConv)",
    "deform_conv_backward_input": "deformable conv (DeformConv)",
    "deform_conv_backward_filter": "deformable conv (DeformConv)",
    "modulated_deform_conv_forward": "deformable conv (ModulatedDeformConv)",
    "modulated_deform_conv_backward": "deformable conv (ModulatedDeformConv)",
    "InstanceAnnotation": "fast COCO evaluation (COCOeval_opt)",
    "COCOevalEvaluateImages": "fast COCO evaluation (COCOeval_opt)",
    "COCOevalAccumulate": "fast COCO evaluation (COCOeval_opt)",
}

_NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "complex": complex,
                  "object": object, "str": str}
# detectron2 modules on gn_det's code paths that may still use the removed numpy aliases.
_NUMPY_ALIAS_USERS = ["data/build.py", "structures/masks.py", "utils/visualizer.py",
                      "utils/video_visualizer.py", "evaluation/sem_seg_evaluation.py",
                      "evaluation/pascal_voc_evaluation.py", "data/datasets/pascal_voc.py"]


class MissingCompiledOp(RuntimeError):
    """Raised when code reaches an op of detectron2._C in an install that has no compiled ops."""


class _MissingC(types.ModuleType):
    """Stand-in for `detectron2._C`: importable, and each op names itself when used."""

    gn_det_fallback = True

    # What detectron2's collect_env asks of `_C`: answered truthfully instead of raising.
    @staticmethod
    def get_compiler_version():
        return "none (detectron2 installed without compiled ops; gn_det fallback)"

    get_cuda_version = get_compiler_version

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        feature = _C_OP_FEATURES.get(name, "a compiled detectron2 op")
        raise MissingCompiledOp(
            f"detectron2._C.{name} is unavailable: this detectron2 has no compiled ops, and "
            f"{feature} needs them. Build detectron2 from source (with its csrc) to use it.")


def _d2_root() -> Optional[Path]:
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _d2_source(relpath: str) -> str:
    """Text of one detectron2 source file, read without importing it ('' if absent)."""
    root = _d2_root()
    if root is None or not (root / relpath).is_file():
        return ""
    return (root / relpath).read_text(encoding="utf-8", errors="replace")


# ----------------------------------------------------------------------------------- guards
# Each guard takes its evidence as arguments (defaulting to the live environment) so tests can
# exercise it both ways.

def needs_missing_C(c_spec_found: Optional[bool] = None, d2_found: Optional[bool] = None) -> bool:
    """True when detectron2 is installed but its compiled `_C` extension is not."""
    if d2_found is None:
        d2_found = _d2_root() is not None
    if not d2_found:
        return False
    if c_spec_found is None:
        mod = sys.modules.get("detectron2._C")
        if mod is not None:
            return False  # real, or our fallback already in place
        c_spec_found = importlib.util.find_spec("detectron2._C") is not None
    return not c_spec_found


def has_compiled_ops() -> bool:
    """Whether detectron2._C is a real extension (False when it is missing or our fallback)."""
    mod = sys.modules.get("detectron2._C")
    if mod is not None:
        return not getattr(mod, "gn_det_fallback", False)
    return _d2_root() is not None and importlib.util.find_spec("detectron2._C") is not None


def needs_pil_linear(image_module=None, d2_transform_src: Optional[str] = None) -> bool:
    """True when Pillow lacks `Image.LINEAR` and detectron2's transforms still use it."""
    if image_module is None:
        from PIL import Image as image_module
    if d2_transform_src is None:
        d2_transform_src = _d2_source("data/transforms/transform.py")
    return not hasattr(image_module, "LINEAR") and "Image.LINEAR" in d2_transform_src


def needs_pkg_resources(pkg_resources_found: Optional[bool] = None,
                        d2_model_zoo_src: Optional[str] = None) -> bool:
    """True when `pkg_resources` is gone (setuptools>=81) and detectron2's model_zoo imports it."""
    if pkg_resources_found is None:
        pkg_resources_found = ("pkg_resources" in sys.modules
                               or importlib.util.find_spec("pkg_resources") is not None)
    if d2_model_zoo_src is None:
        d2_model_zoo_src = _d2_source("model_zoo/model_zoo.py")
    return not pkg_resources_found and re.search(r"^import pkg_resources", d2_model_zoo_src,
                                                  re.M) is not None


_ALIAS_RE = re.compile(r"\bnp\.(bool|int|float|complex|object|str)\b(?!_)")


def missing_numpy_aliases(numpy_module=None, d2_sources: Optional[List[str]] = None) -> List[str]:
    """Removed numpy aliases (e.g. `np.int`) that detectron2 code on our paths still uses."""
    if numpy_module is None:
        import numpy as numpy_module
    if d2_sources is None:
        d2_sources = [_d2_source(p) for p in _NUMPY_ALIAS_USERS]
    used = {m for src in d2_sources for m in _ALIAS_RE.findall(src)}
    # numpy>=1.24 serves expired aliases only through a warning/raising module __getattr__;
    # vars() sees real attributes alone (numpy 2 re-added `np.bool` as one).
    return sorted(a for a in used if a not in vars(numpy_module))


def needs_coco_fast_eval_fallback(compiled: Optional[bool] = None) -> bool:
    """True when COCOEvaluator's default fast path (COCOeval_opt) cannot run: no `_C`."""
    return not (has_compiled_ops() if compiled is None else compiled)


_EXPORT_INIT = "export/__init__.py"
_EXPORT_API = "export/api.py"
# What detectron2.export serves without caffe2 (what main's __init__ imports when caffe2 is
# absent), by the submodule that defines it; and the caffe2-only names of export/api.py.
_EXPORT_NAMES = {"TracingAdapter": "flatten", "scripting_with_instances": "torchscript",
                 "dump_torchscript_IR": "torchscript"}
_CAFFE2_EXPORT_NAMES = ("add_export_config", "export_caffe2_model", "Caffe2Model",
                        "export_onnx_model", "Caffe2Tracer")


def needs_export_without_caffe2(caffe2_found: Optional[bool] = None,
                                d2_export_init_src: Optional[str] = None,
                                d2_export_api_src: Optional[str] = None) -> bool:
    """True when caffe2 is not importable and detectron2.export's `__init__` imports `.api`
    unconditionally while `api.py` imports caffe2 at module level (v0.6): `import
    detectron2.export` would fail. main imports `.api` only when caffe2 imports."""
    if d2_export_init_src is None:
        if "detectron2.export" in sys.modules:
            return False  # imported already (caffe2 present), or our package in place
        d2_export_init_src = _d2_source(_EXPORT_INIT)
    if d2_export_api_src is None:
        d2_export_api_src = _d2_source(_EXPORT_API)
    if caffe2_found is None:
        caffe2_found = importlib.util.find_spec("caffe2") is not None
    return (not caffe2_found
            and re.search(r"^from \.api import", d2_export_init_src, re.M) is not None
            and re.search(r"^(from|import) caffe2\b", d2_export_api_src, re.M) is not None)


# ----------------------------------------------------------------------------------- shims

@contextlib.contextmanager
def quiet_jit_script_warnings():
    """detectron2 v0.6 (and fvcore) decorate helpers with torch.jit.script as their modules load,
    and current torch warns on each: ignore that warning while gn_det imports them, then remove
    exactly that filter (filters other libraries add meanwhile stay; none of ours outlives it)."""
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated",
                            category=FutureWarning)
    ours = warnings.filters[0]
    try:
        yield
    finally:
        if ours in warnings.filters:
            warnings.filters.remove(ours)
            getattr(warnings, "_filters_mutated", lambda: None)()  # as filterwarnings does


def _apply_missing_C():
    import detectron2

    fallback = _MissingC("detectron2._C", "gn_det fallback: detectron2 has no compiled ops")
    sys.modules["detectron2._C"] = fallback
    detectron2._C = fallback


def _apply_pil_linear():
    from PIL import Image

    Image.LINEAR = Image.BILINEAR  # the same filter: LINEAR was an alias of BILINEAR


def _resource_filename(package: str, resource: str) -> str:
    """`pkg_resources.resource_filename` for a package installed as plain files."""
    spec = importlib.util.find_spec(package)
    base = Path(spec.origin).parent if spec and spec.origin else Path(".")
    return str(base / resource)


@contextlib.contextmanager
def _pkg_resources_visible():
    """A pkg_resources with resource_filename alone in sys.modules while in the block: visible
    only while detectron2's model_zoo imports, so other libraries still see the truth."""
    shim = types.ModuleType("pkg_resources", "gn_det: resource_filename only, for detectron2")
    shim.resource_filename = _resource_filename
    sys.modules["pkg_resources"] = shim
    try:
        yield
    finally:
        del sys.modules["pkg_resources"]


def _apply_pkg_resources():
    with _pkg_resources_visible():
        import detectron2.model_zoo.model_zoo  # noqa: F401  (binds the shim as its global)


def _apply_numpy_aliases():
    import numpy as np

    for alias in missing_numpy_aliases():
        setattr(np, alias, _NUMPY_ALIASES[alias])


def _apply_coco_fast_eval_fallback():
    from pycocotools.cocoeval import COCOeval

    import detectron2.evaluation.coco_evaluation as coco_evaluation

    coco_evaluation.COCOeval_opt = COCOeval  # use_fast_impl=True now runs pycocotools' COCOeval


def _export_getattr(name: str):
    """detectron2.export's attributes, imported on first use (as main's `__init__` imports them);
    the caffe2-only ones raise an ImportError naming caffe2."""
    if name in _EXPORT_NAMES:
        module = importlib.import_module(f"detectron2.export.{_EXPORT_NAMES[name]}")
        value = getattr(module, name)
        setattr(sys.modules["detectron2.export"], name, value)
        return value
    if name in _CAFFE2_EXPORT_NAMES:
        raise ImportError(f"detectron2.export.{name} needs caffe2, which is not installed; "
                          f"export through detectron2.export.TracingAdapter (torch.jit.trace, "
                          f"torch.onnx.export), as gn_det's tools/export_model.py does")
    raise AttributeError(f"module 'detectron2.export' has no attribute {name!r}")


def _apply_export_without_caffe2():
    """Put detectron2.export in sys.modules as its package (its own __path__ and __spec__, so
    submodules import from its folder) without running its `__init__`: no fake caffe2 module
    anywhere, and nothing of it imported until used."""
    import detectron2

    spec = importlib.util.find_spec("detectron2.export")
    package = importlib.util.module_from_spec(spec)
    package.__all__ = list(_EXPORT_NAMES)
    package.__getattr__ = _export_getattr
    sys.modules["detectron2.export"] = package
    detectron2.export = package


# Order matters: `_C` and Pillow must be bridged before detectron2.layers / .data import.
SHIMS: Dict[str, "tuple[Callable[[], bool], Callable[[], None]]"] = {
    "missing_C": (needs_missing_C, _apply_missing_C),
    "pil_linear": (needs_pil_linear, _apply_pil_linear),
    "numpy_aliases": (lambda: bool(missing_numpy_aliases()), _apply_numpy_aliases),
    "pkg_resources": (needs_pkg_resources, _apply_pkg_resources),
    "coco_fast_eval": (needs_coco_fast_eval_fallback, _apply_coco_fast_eval_fallback),
    "export_caffe2": (needs_export_without_caffe2, _apply_export_without_caffe2),
}

# Shims that patch one detectron2 module: applied as that module executes (gn_det.import_hooks),
# so that loading detectron2 does not load these modules too: "around" runs the module's
# execution inside the shim's context, "after" patches the module once it has executed.
MODULE_SHIMS: Dict[str, "tuple[str, str]"] = {
    "detectron2.model_zoo.model_zoo": ("pkg_resources", "around"),
    "detectron2.evaluation.coco_evaluation": ("coco_fast_eval", "after"),
}
_AROUND = {"pkg_resources": _pkg_resources_visible}

APPLIED: List[str] = []


def _record(name: str) -> None:
    APPLIED.append(name)
    logger.debug("gn_det.compat: applied %s", name)


def apply_all(defer_module_shims: bool = False) -> List[str]:
    """Apply every shim whose guard is true; idempotent. Returns the names applied so far.
    `defer_module_shims`: leave the MODULE_SHIMS ones to `shims_for` as their modules load."""
    if _d2_root() is None:
        raise ImportError("gn_det needs detectron2, which is not installed: run `make setup`, "
                          "or install detectron2 yourself and then `pip install -e .`")
    deferred = {name for name, _ in MODULE_SHIMS.values()} if defer_module_shims else set()
    for name, (guard, apply) in SHIMS.items():
        if name not in APPLIED and name not in deferred and guard():
            apply()
            _record(name)
    return list(APPLIED)


@contextlib.contextmanager
def shims_for(module_name: str):
    """The context detectron2 module `module_name` executes in: its MODULE_SHIMS shim, if any
    and if its guard holds, around or after its execution."""
    name, when = MODULE_SHIMS.get(module_name, (None, None))
    if name is None or name in APPLIED or not SHIMS[name][0]():
        yield
        return
    if when == "around":
        with _AROUND[name]():
            yield
    else:
        yield
        SHIMS[name][1]()
    _record(name)
