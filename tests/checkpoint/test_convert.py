"""The convert_weights command (gn_det.commands.convert_weights, tools/convert_weights.py) over
gn_det.checkpoint.convert: its report and one-line errors; converting loads only what it needs."""
import subprocess
import sys

import pytest
import torch
import torchvision

from gn_det.cli import run_cli
from gn_det.commands import convert_weights

from helpers import REPO

TOOL = REPO / "tools" / "convert_weights.py"


def test_converts_and_reports(tmp_path, capsys):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    assert convert_weights.main([str(tmp_path / "r18.pth"), str(tmp_path / "R-18.pth")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ResNet-18, BN: 100 tensors converted"
    assert out[1] == "missing (backbone keys not in the input): 0"
    assert out[2] == "unexpected (input keys not in the backbone): 2: fc.weight, fc.bias"
    assert out[3] == "shape mismatch: 0"
    assert any("STRIDE_IN_1X1 False" in line for line in out)
    saved = torch.load(tmp_path / "R-18.pth", weights_only=True)
    assert saved["matching_heuristics"] is True
    assert "res5.1.conv2.norm.running_var" in saved["model"]


def test_corrupt_input_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(sys, "argv", ["convert_weights.py", str(tmp_path / "bad.pth"),
                                      str(tmp_path / "out.pth")])
    with pytest.raises(SystemExit) as info:
        run_cli(convert_weights.main, "convert_weights")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"convert_weights: error: {tmp_path / 'bad.pth'}: not a readable torch")
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.slow
def test_missing_input_from_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "absent.pth"),
                             str(tmp_path / "out.pth")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (f"convert_weights: error: {tmp_path / 'absent.pth'}: no such file "
                             "(rerun with --debug for the traceback)\n")
    result = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "absent.pth"),
                             str(tmp_path / "out.pth"), "--debug"], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "WeightsError" in result.stderr


def test_converts_a_timm_bit_file_with_the_same_report(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnetv2_50x1_bit", pretrained=False).state_dict(),
              str(tmp_path / "model.safetensors"))  # as on timm's hub page
    assert convert_weights.main([str(tmp_path / "model.safetensors"),
                             str(tmp_path / "R-BiT-50x1.pth")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "BiT ResNetV2-50x1 (timm resnetv2_50x1_bit), GN: 151 tensors converted"
    assert out[1] == "missing (backbone keys not in the input): 0"
    assert out[2] == "unexpected (input keys not in the backbone): 2: head.fc.bias, head.fc.weight"
    assert out[3] == "shape mismatch: 0"
    assert out[4] == f"wrote {tmp_path / 'R-BiT-50x1.pth'}"
    assert out[5].startswith("note: the network: MODEL.BIT.DEPTH 50, MODEL.BIT.WIDTH_FACTOR 1, "
                             "MODEL.NORMS.BACKBONE {TYPE: GN, WS: True}; load them with")
    assert "MODEL.PIXEL_MEAN [127.5, 127.5, 127.5]" in out[6]
    saved = torch.load(tmp_path / "R-BiT-50x1.pth", weights_only=True)
    assert "res5.2.conv3.weight" in saved["model"] and "final_norm.bias" in saved["model"]


@pytest.mark.slow
def test_converting_loads_neither_the_trainer_nor_evaluation_nor_matplotlib():
    script = ("import sys, gn_det.checkpoint.convert; print(sorted(m for m in ('matplotlib', "
              "'gn_det.engine', 'gn_det.evaluation', 'detectron2.engine', 'detectron2.evaluation')"
              " if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
