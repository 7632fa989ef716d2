"""tools/bootstrap.py (`make setup`): the torch pair it picks from tools/torch-pairs.txt, its
final check names the part that failed, and the editable install is skipped only when its stamp
matches this checkout. Choosing runs the real pip (dry runs); installing is faked."""
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow  # runs pip (dry runs) and import checks in subprocesses

sys.path.insert(0, str(REPO / "tools"))
import bootstrap  # noqa: E402


def test_check_passes_in_this_environment(capsys):
    bootstrap.check()
    assert "environment OK" in capsys.readouterr().out


@pytest.mark.parametrize("check, check_d2, message", [
    ("raise RuntimeError('operator torchvision::nms does not exist')", "pass",
     r"torchvision.ops.nms does not run \(RuntimeError: operator torchvision::nms does not "
     r"exist\). Reinstall a tested pair"),
    ("pass", "import detectron2.no_such_module",
     r"detectron2.modeling does not import through gn_det \(ModuleNotFoundError: .*"
     r"no_such_module.*\). Remove a broken detectron2"),
])
def test_check_failure_names_what_failed(monkeypatch, check, check_d2, message):
    monkeypatch.setattr(bootstrap, "CHECK", check)
    monkeypatch.setattr(bootstrap, "CHECK_D2", check_d2)
    with pytest.raises(SystemExit, match=rf"^gn_det setup: {message}"):
        bootstrap.check()


def test_editable_install_runs_once_per_checkout_and_setup_py(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(bootstrap.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(bootstrap, "pip", lambda *args: calls.append(args))
    monkeypatch.setattr(bootstrap, "installed_version", lambda dist: "0.1.0")
    bootstrap.ensure_gn_det()
    bootstrap.ensure_gn_det()
    assert len(calls) == 1 and calls[0][-1].endswith("[dev]")
    stamp = tmp_path / "gn_det-setup.stamp"
    stamp.write_text(stamp.read_text().replace(str(bootstrap.REPO), "/elsewhere/gn_det"))
    bootstrap.ensure_gn_det()  # the venv's editable install points at another checkout
    assert len(calls) == 2
    monkeypatch.setattr(bootstrap, "installed_version", lambda dist: None)
    bootstrap.ensure_gn_det()  # uninstalled since: the stamp alone is not trusted
    assert len(calls) == 3


def test_pairs_file_lists_the_tested_pairs_newest_first():
    pairs = bootstrap.read_pairs()
    assert pairs[:2] == [{"torch": "2.15.0", "torchvision": "0.29.2"},
                         {"torch": "2.14.1", "torchvision": "0.29.1"}]
    versions = [tuple(int(x) for x in p["torch"].split(".")) for p in pairs]
    assert versions == sorted(versions, reverse=True)


def test_malformed_pairs_file_is_one_line(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("# comment\ntorch==2.15.0\n")
    with pytest.raises(SystemExit, match=r"^gn_det setup: .*pairs.txt:2: expected `torch==X "
                                         r"torchvision==Y`, got 'torch==2.15.0'$"):
        bootstrap.read_pairs(bad)


def constraint(monkeypatch, tmp_path, text):
    """Point pip at a constraints file of our own (PIP_CONSTRAINT overrides pip's config)."""
    path = tmp_path / "constraints.txt"
    path.write_text(text)
    monkeypatch.setenv("PIP_CONSTRAINT", str(path))


def test_a_constraint_that_caps_torch_chooses_the_older_pair(monkeypatch, tmp_path):
    constraint(monkeypatch, tmp_path, "torch<=2.14.1\ntorchvision<=0.29.1\n")
    pair, why = bootstrap.choose_pair(bootstrap.read_pairs())
    assert pair == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert why.startswith("torch 2.15.0 is refused by a pip constraint (torch<=2.14.1")
    assert why.endswith("; installing the tested pair 2.14.1 / 0.29.1")


def test_no_pair_installs_is_one_line_naming_each_pair_and_its_refusal(monkeypatch, tmp_path):
    constraint(monkeypatch, tmp_path, "torch<=2.0\n")
    with pytest.raises(SystemExit) as e:
        bootstrap.choose_pair(bootstrap.read_pairs())
    msg = str(e.value.code)
    assert "\n" not in msg and msg.startswith("gn_det setup: no tested torch / torchvision pair")
    for p in ("2.15.0 / 0.29.2", "2.14.1 / 0.29.1"):
        assert f"{p}: refused by a pip constraint (torch<=2.0)" in msg


def test_refusal_names_a_missing_distribution():
    out = ("ERROR: Could not find a version that satisfies the requirement torch==9.9.9\n"
           "ERROR: No matching distribution found for torch==9.9.9\n")
    assert bootstrap.refusal(out) == ("not available to this Python / platform from pip's "
                                      "indexes (torch==9.9.9)")


def fake_env(monkeypatch, have):
    """installed_version answers from `have`; pip installs are recorded, not run."""
    installs = []
    monkeypatch.setattr(bootstrap, "installed_version", lambda dist: have.get(dist))
    monkeypatch.setattr(bootstrap, "pip", lambda *args: installs.append(args))
    return installs


@pytest.mark.parametrize("have", [
    {"torch": "2.14.1+cu130", "torchvision": "0.29.1+cu130"},
    {"torch": "2.15.0", "torchvision": "0.29.2"},
])
def test_a_venv_holding_a_tested_pair_is_kept(monkeypatch, have):
    installs = fake_env(monkeypatch, have)
    monkeypatch.setattr(bootstrap, "pip_allows", lambda pair: pytest.fail("pip was asked"))
    bootstrap.ensure_torch()
    assert installs == []


def test_never_the_local_cpu_wheel(monkeypatch, tmp_path, capsys):
    """torch 2.13.0+cpu (the local file) is not a tested pair: the exact pins replace it."""
    constraint(monkeypatch, tmp_path, "torch<=2.14.1\ntorchvision<=0.29.1\n")
    installs = fake_env(monkeypatch, {"torch": "2.13.0+cpu", "torchvision": "0.29.1"})
    assert bootstrap.ensure_torch() == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert installs == [("install", "torch==2.14.1", "torchvision==0.29.1")]
    out = capsys.readouterr().out
    assert "installing the tested pair 2.14.1 / 0.29.1 (have torch 2.13.0+cpu" in out
