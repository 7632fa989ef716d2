"""The suite's own layout: pytest's default import mode imports each test file by its basename,
so two test files with one name in different folders stop collection for the whole suite."""
import collections

from helpers import REPO


def test_test_file_basenames_are_unique():
    by_name = collections.defaultdict(list)
    for path in (REPO / "tests").rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(REPO)))
    clashes = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"rename so each basename is unique: {clashes}"
