"""gn_det.commands: every command is a module with `main` and `run`, installed as the console
script gn-det-<name>, runnable as `python -m gn_det.commands.<name>`, and every script in tools/
and datasets/ (but tools/bootstrap.py, which runs before gn_det is installed) is a two-line
wrapper around one of them, holding no logic of its own."""
import ast
import importlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

COMMANDS = sorted(p.stem for p in (REPO / "gn_det" / "commands").glob("*.py")
                  if p.stem != "__init__")
WRAPPERS = sorted(p for folder in ("tools", "datasets") for p in (REPO / folder).glob("*.py")
                  if p.name != "bootstrap.py")


def test_every_command_has_main_and_run():
    assert {"train_net", "export_model", "convert_weights", "voc_to_coco"} <= set(COMMANDS)
    for name in COMMANDS:
        module = importlib.import_module(f"gn_det.commands.{name}")
        assert callable(module.main) and callable(module.run), name


def test_each_command_is_an_installed_console_script():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
               if e.value.startswith("gn_det.")}
    for name in COMMANDS:
        assert scripts.get(f"gn-det-{name.replace('_', '-')}") == f"gn_det.commands.{name}:run"
    assert scripts["gn-det-train"] == "gn_det.commands.train_net:run"


@pytest.mark.parametrize("path", WRAPPERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_are_two_line_wrappers(path):
    tree = ast.parse(path.read_text())
    body = [node for node in tree.body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert len(body) == 2, f"{path}: expected an import and the __main__ block only"
    imported, main = body
    assert isinstance(imported, ast.ImportFrom) and imported.module == \
        f"gn_det.commands.{path.stem}" and [a.name for a in imported.names] == ["run"]
    assert isinstance(main, ast.If) and ast.unparse(main.test) == "__name__ == '__main__'"
    assert ast.unparse(main.body[0]) == "run()" and len(main.body) == 1


@pytest.mark.parametrize("how", ["script", "module", "wrapper"])
def test_a_command_runs_each_way(how, tmp_path):
    command = {"script": [str(Path(sys.executable).parent / "gn-det-make-shapes")],
               "module": [sys.executable, "-m", "gn_det.commands.make_shapes"],
               "wrapper": [sys.executable, str(REPO / "datasets" / "make_shapes.py")]}[how]
    run = subprocess.run(command + ["--out", str(tmp_path), "--train", "1", "--val", "0",
                                    "--size", "32", "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("wrote 1 image (1 train, 0 val, 4 classes)")
