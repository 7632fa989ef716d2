"""The package's import graph, read from the sources (an AST walk, so imports inside functions
count too): no circle among gn_det's modules, and dependencies point one way: utils import no other
part of gn_det; modeling imports no engine, checkpoint, export or command; checkpoint no engine;
only commands import the CLI helpers; export does not import the benchmarks; utils and datasets
import neither torch nor detectron2 at the top of a module (tests/evaluation checks that scoring
a results file loads neither, in a fresh interpreter)."""
import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from helpers import REPO

PACKAGE = REPO / "gn_det"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(importer: str, node: ast.AST) -> List[str]:
    """The gn_det modules an import statement names (a `from package import submodule` names the
    submodule; a name imported from a package, the package)."""
    is_package = MODULES[importer].name == "__init__.py"
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "gn_det"]
    base = node.module or ""
    if node.level:
        parts = importer.split(".")[:len(importer.split(".")) - node.level + is_package]
        base = ".".join(parts + ([base] if base else []))
    if base.split(".")[0] != "gn_det":
        return []
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return found if len(found) == len(node.names) else found + [base]


def imports() -> Dict[str, List[Tuple[str, bool]]]:
    """module -> [(imported gn_det module, at the top of the file)]."""
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        graph[name] = [(target, id(node) in top) for node in ast.walk(tree)
                       if isinstance(node, (ast.Import, ast.ImportFrom))
                       for target in resolve(name, node) if target != name]
    return graph


GRAPH = imports()


def cycles(graph: Dict[str, List[Tuple[str, bool]]]) -> List[List[str]]:
    """Circles of the graph, each once (depth-first search)."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target, _ in graph.get(node, []):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def arrows(source: str, target: str) -> Set[str]:
    return {f"{m} -> {t}" for m, targets in GRAPH.items() if m.startswith(source)
            for t, _ in targets if t.startswith(target)}


def test_the_walk_sees_the_package():
    assert len(MODULES) > 80
    assert ("gn_det.checkpoint.bit_weights", True) in GRAPH["gn_det.checkpoint.checkpointer"]
    assert ("gn_det.config.specs", True) in GRAPH["gn_det.modeling.resnet"]


def test_no_import_circle():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": [("b", True)], "b": [("c", False)], "c": [("a", True)]}) == \
        [["a", "b", "c", "a"]]


@pytest.mark.parametrize("source, target", [
    ("gn_det.utils", "gn_det."), ("gn_det.layers", "gn_det.modeling"),
    ("gn_det.modeling", "gn_det.engine"), ("gn_det.modeling", "gn_det.checkpoint"),
    ("gn_det.modeling", "gn_det.export"), ("gn_det.checkpoint", "gn_det.engine"),
    ("gn_det.export", "gn_det.benchmark"), ("gn_det.evaluation", "gn_det.engine"),
    ("gn_det.config", "gn_det.engine"), ("gn_det.data", "gn_det.engine"),
])
def test_dependencies_point_one_way(source, target):
    found = arrows(source, target)
    if source == "gn_det.utils":  # utils may use each other, nothing else of gn_det
        found = {a for a in found if not a.split(" -> ")[1].startswith("gn_det.utils")}
    assert found == set()


def test_only_commands_import_the_cli_helpers():
    users = {m for m, targets in GRAPH.items() for t, _ in targets if t == "gn_det.cli"}
    assert users and all(m.startswith("gn_det.commands.") for m in users), sorted(users)


@pytest.mark.parametrize("package", ["gn_det.checkpoint", "gn_det.export", "gn_det.config"])
def test_imports_at_the_top_of_the_file(package):
    inside = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if m.startswith(package)
                    for t, top in targets if not top)
    assert inside == []


@pytest.mark.parametrize("package", ["gn_det.utils", "gn_det.datasets"])
def test_light_packages_import_no_torch_or_detectron2_at_the_top(package):
    heavy = []
    for name, path in MODULES.items():
        if name.startswith(package):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                heavy += [f"{name}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert heavy == []


HEAVY = {"torch", "torchvision", "detectron2"}
