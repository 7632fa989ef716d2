"""No code path of gn_det, tools/ or datasets/ runs code from input: no eval/exec, no unsafe YAML,
no pickle loads outside the one guarded opt-in, torch.load only with weights_only=True, no shell.
A static scan of the sources, so a new call site fails here before it ships; the behaviour
(python-tag YAML refused, checkpoints with code refused, values never evaluated) is tested in
test_config, test_checkpoint and test_bad_inputs."""
import ast

import pytest

from helpers import REPO

SOURCES = sorted(p for folder in ("gn_det", "tools", "datasets")
                 for p in (REPO / folder).rglob("*.py"))
# The one place that may unpickle in full: behind GN_DET_ALLOW_PICKLE, with a warning.
FULL_UNPICKLE_ALLOWED = {"gn_det/checkpoint/safe_load.py"}


def dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def problems(path) -> list:
    rel = str(path.relative_to(REPO))
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
        if not isinstance(node, ast.Call):
            continue
        name, where = dotted(node.func), f"{rel}:{node.lineno}"
        if name in ("eval", "exec", "compile", "os.system", "os.popen"):
            found.append(f"{where}: {name}()")
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(f"{where}: {name}() (use yaml.safe_load / merge_config_file)")
        elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler"):
            found.append(f"{where}: {name}() (unpickling runs code)")
        elif name == "torch.load":
            weights_only = keyword(node, "weights_only")
            safe = isinstance(weights_only, ast.Constant) and weights_only.value is True
            if not safe and rel not in FULL_UNPICKLE_ALLOWED:
                found.append(f"{where}: torch.load without weights_only=True")
        elif name.startswith("subprocess.") or name in ("Popen",):
            shell = keyword(node, "shell")
            if isinstance(shell, ast.Constant) and shell.value:
                found.append(f"{where}: {name}(shell=True)")
    return found


def test_sources_are_scanned():
    assert len(SOURCES) > 30 and REPO / "gn_det/config/front.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_code_runs_from_input(path):
    assert problems(path) == []


def test_the_scan_catches_each_kind(tmp_path, monkeypatch):
    monkeypatch.setattr("test_security.REPO", tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text("import yaml, pickle, torch, subprocess\n"
                   "eval(x)\nyaml.load(f)\npickle.loads(b)\ntorch.load(p)\n"
                   "torch.load(p, weights_only=False)\nsubprocess.run(c, shell=True)\n"
                   "torch.load(p, weights_only=True)\nyaml.safe_load(f)\n")
    assert [p.split(": ", 1)[1] for p in problems(bad)] == [
        "eval()", "yaml.load() (use yaml.safe_load / merge_config_file)",
        "pickle.loads() (unpickling runs code)", "torch.load without weights_only=True",
        "torch.load without weights_only=True", "subprocess.run(shell=True)"]
