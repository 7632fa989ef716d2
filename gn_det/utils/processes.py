"""The environment of the Python processes gn_det starts (benchmark workers, study cells), so that
they import the same gn_det as the process that starts them."""
import os
import site
from pathlib import Path
from typing import Dict, Optional


def _site_dirs():
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    return {os.path.realpath(d) for d in dirs + ([user] if user else [])}


def child_env(threads: int = 0, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """`base` (default: os.environ) for a child `python -m gn_det...`. An installed gn_det (in a
    site-packages dir, editable or not) is found by the child as is; one run from a checkout
    that is not installed (tools/ put it on sys.path) gets its folder on PYTHONPATH. `threads`
    > 0 sets OMP_NUM_THREADS / MKL_NUM_THREADS (torch's intra-op threads)."""
    import gn_det

    env = dict(os.environ if base is None else base)
    home = os.path.realpath(Path(gn_det.__file__).resolve().parents[1])
    if home not in _site_dirs():
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if home not in {os.path.realpath(p) for p in parts}:
            env["PYTHONPATH"] = os.pathsep.join([home] + parts)
    if threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env
