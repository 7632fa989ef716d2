"""tools/bootstrap.py (`make setup`): its final check names the part that failed, and the
editable install is skipped only when its stamp matches this checkout."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bootstrap  # noqa: E402


def test_check_passes_in_this_environment(capsys):
    bootstrap.check()
    assert "environment OK" in capsys.readouterr().out


@pytest.mark.parametrize("check, check_d2, message", [
    ("raise RuntimeError('operator torchvision::nms does not exist')", "pass",
     r"torchvision.ops.nms does not run \(RuntimeError: operator torchvision::nms does not "
     r"exist\). Reinstall the pinned pair"),
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
