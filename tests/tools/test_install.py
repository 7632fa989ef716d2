"""setup.py: gn_det installed without -e (a wheel build into a fresh venv, run from outside the
checkout) imports its own copy, finds its shipped configs, and runs the study and the
end-to-end benchmark, whose worker processes must import that installed copy too."""
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from cli_harness import TINY_MODEL_OPTS, tiny_dataset_opts
from helpers import REPO

pytestmark = pytest.mark.slow  # installs the package into a fresh venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv whose site-packages holds a non-editable gn_det and sees this environment's other
    packages (torch, detectron2, ...) through a .pth line, not this checkout. The line runs
    site.addsitedir, so the parent's own .pth files count too (detectron2 main installed with
    `pip install -e`, as its users build it, is found through one)."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    for part in ("gn_det", "configs"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "setup.py", src / "setup.py")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    site = site.stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    (Path(site) / "parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                        "--no-cache-dir", "--quiet", "--target", site, str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return {"python": str(python), "site": site, "root": root}


def run_installed(installed, script: str):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(installed["root"])}  # no PYTHONPATH
    r = subprocess.run([installed["python"], "-c", textwrap.dedent(script)], capture_output=True,
                       text=True, cwd=installed["root"], env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_installed_copy_imports_itself_and_its_configs(installed):
    out = run_installed(installed, """
        import gn_det
        from gn_det.model_zoo import config_dir, get_config_file
        print(gn_det.__file__)
        print(config_dir())
        print(get_config_file("toy/compare_norms_shapes.yaml"))
    """)
    module, configs, toy = out.splitlines()[-3:]
    assert module.startswith(installed["site"]) and str(REPO) not in module
    assert configs.startswith(installed["site"]) and toy.startswith(configs)


def test_installed_copy_runs_a_study_cell_and_the_e2e_benchmark(installed, tiny_shapes):
    opts = tiny_dataset_opts(tiny_shapes, "inst") + TINY_MODEL_OPTS
    out = run_installed(installed, f"""
        import gn_det
        from gn_det.model_zoo import config_dir, get_config_file
        from gn_det.study.grid import PRESETS, Grid, Schedule
        from gn_det.study.runner import run_grid
        from gn_det.benchmark.e2e import e2e_benchmark

        schedule = Schedule(images=2, lr_per_image=0.0025, warmup_images=0, step_fractions=(),
                            checkpoint_fraction=1.0, seed=0)
        grid = Grid(get_config_file("toy/compare_norms_shapes.yaml"), [PRESETS["gn_all"]], [1],
                    schedule, {opts!r})
        (row,) = run_grid(grid, "study", threads=1)
        print("cell", row["status"], row.get("error", ""))
        result = e2e_benchmark(str(config_dir()), repeats=1, size=(64, 96), batch=1,
                               variants=("gnws_all",), threads=1)
        print("e2e", result["rows"]["gnws_all"]["train_s_per_iter"] > 0)
    """)
    assert "cell done " in out and "e2e True" in out
