"""What importing gn_det sets up, without loading torch or detectron2 itself.

`import gn_det` stays light (scoring a results file needs neither torch nor detectron2), yet
detectron2 must see gn_det's shims and components whenever it is used. So the work waits for
detectron2: as `detectron2` is first imported, the compat shims are applied (gn_det.compat; a
shim that patches one detectron2 module, as that module executes); as `detectron2.modeling` is
first imported, gn_det's components register in its registries (by importing gn_det.modeling).
Where those modules are already loaded, `install` does both at once.
While any detectron2 module executes, torch's `torch.jit.script` deprecation warning, which
detectron2 v0.6 triggers as it loads, is silenced (gn_det.compat.quiet_jit_script_warnings).
"""
import importlib
import importlib.abc
import sys
from typing import Callable, Dict

from . import compat

_D2 = "detectron2"


def _apply_shims() -> None:
    compat.apply_all(defer_module_shims=True)


def _register_components() -> None:
    importlib.import_module("gn_det.modeling")


# module name -> what runs right after that module has executed
AFTER_IMPORT: Dict[str, Callable[[], None]] = {
    _D2: _apply_shims,
    "detectron2.modeling": _register_components,
}


class _HookedLoader:
    """Wraps a module's loader: the module executes with the jit warning silenced, then its
    AFTER_IMPORT hook (if any) runs. Every other attribute is the wrapped loader's."""

    def __init__(self, loader, hook):
        self._loader, self._hook = loader, hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with compat.quiet_jit_script_warnings():
            with compat.shims_for(module.__name__):
                self._loader.exec_module(module)
            if self._hook is not None:
                self._hook()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _DetectronFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for detectron2's modules it takes the spec the other finders give
    and wraps its loader (_HookedLoader)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _D2 and not fullname.startswith(_D2 + "."):
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module") \
                and not isinstance(spec.loader, _HookedLoader):
            spec.loader = _HookedLoader(spec.loader, AFTER_IMPORT.get(fullname))
        return spec


def install() -> None:
    """Run the hooks of detectron2 modules already loaded; watch for the others. Idempotent."""
    if not any(isinstance(f, _DetectronFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _DetectronFinder())
    for name, hook in AFTER_IMPORT.items():
        if name in sys.modules:
            with compat.quiet_jit_script_warnings():
                hook()
