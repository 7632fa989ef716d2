"""gn_det.model_zoo.describe and tools/describe_configs.py: every preset's norms and parameter
counts (YAML and LazyConfig), from the built model."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from gn_det.model_zoo import describe as describe_configs

from helpers import REPO

pytestmark = pytest.mark.slow  # builds every preset, R50s included

ROOT = REPO

RETINA = ROOT / "configs/RetinaNet"


def test_presets_are_every_runnable_config():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in describe_configs.preset_configs()}
    assert "RetinaNet/retinanet_R_50_FPN_1x_gnws_all.yaml" in names
    assert "toy/retinanet_R_18_FPN_gnws_shapes.yaml" in names
    assert "lazy/toy/retinanet_R_18_FPN_gnws_shapes.py" in names
    assert not any(Path(n).name.startswith("Base-") or "common" in n for n in names)


def test_ws_adds_no_parameters_and_freezing_counts_as_not_trainable():
    gn = describe_configs.describe(RETINA / "retinanet_R_50_FPN_1x_gn_all.yaml")
    gnws = describe_configs.describe(RETINA / "retinanet_R_50_FPN_1x_gnws_all.yaml")
    assert gn["norms"] == "BACKBONE=GN FPN=GN RETINANET_HEAD=GN"
    assert gnws["norms"] == "BACKBONE=GN+WS FPN=GN+WS RETINANET_HEAD=GN+WS"
    assert gn["parameters"] == gnws["parameters"]
    # FREEZE_AT 2: the stem and res2 (conv weights and GN affine) are frozen.
    assert 30e6 < gn["trainable"] < gn["parameters"] < 40e6
    unfrozen = describe_configs.describe(RETINA / "retinanet_R_50_FPN_1x_gn_all.yaml",
                                         ["MODEL.BACKBONE.FREEZE_AT", 0])
    assert unfrozen["trainable"] == unfrozen["parameters"] == gn["parameters"]


def test_syncbn_builds_under_its_own_process_group_with_bns_parameter_count():
    bn = describe_configs.describe(RETINA / "retinanet_R_50_FPN_1x_bn_all.yaml")
    sync = describe_configs.describe(RETINA / "retinanet_R_50_FPN_1x_syncbn_all.yaml")
    assert "SyncBN" in sync["norms"] and not dist.is_initialized()
    assert sync["parameters"] == bn["parameters"]


def test_mask_rcnn_lists_its_mask_head():
    row = describe_configs.describe(ROOT / "configs/RCNN/mask_rcnn_R_50_FPN_1x_gnws.yaml")
    assert row["norms"].split() == ["BACKBONE=GN+WS", "FPN=GN+WS",
                                    "BOX_HEAD=GN+WS", "MASK_HEAD=GN+WS"]
    line = describe_configs.table_row(row)
    assert line.startswith("| RCNN/mask_rcnn_R_50_FPN_1x_gnws.yaml | GeneralizedRCNN |")


def test_lazy_preset_is_described_as_its_yaml_twin():
    lazy = describe_configs.describe(ROOT / "configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py")
    yaml = describe_configs.describe(ROOT / "configs/toy/retinanet_R_18_FPN_gnws_shapes.yaml")
    assert lazy["norms"] == yaml["norms"] == "BACKBONE=GN+WS FPN=GN+WS RETINANET_HEAD=GN+WS"
    assert (lazy["parameters"], lazy["trainable"]) == (yaml["parameters"], yaml["trainable"])
    mask = describe_configs.describe(ROOT / "configs/lazy/mask_rcnn_R_50_FPN_1x_gn.py")
    assert mask["norms"].split() == ["BACKBONE=GN", "FPN=GN", "BOX_HEAD=GN", "MASK_HEAD=GN"]
    assert mask["meta_architecture"] == "GeneralizedRCNN"


def test_cli_prints_a_markdown_table():
    demo = ROOT / "configs/toy/retinanet_R_18_FPN_gnws_shapes.yaml"
    proc = subprocess.run([sys.executable, str(ROOT / "tools/describe_configs.py"), str(demo)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert out[0] == describe_configs.HEADER
    assert out[2].startswith("| toy/retinanet_R_18_FPN_gnws_shapes.yaml | GNRetinaNet | "
                             "BACKBONE=GN+WS")
    assert out[2].endswith(" M |")


@pytest.mark.parametrize("text, named", [
    ("MODEL:\n  NORMS:\n    BACKBONE: {TYPE: 'GX'}\n", "MODEL.NORMS.BACKBONE.TYPE"),
    ("MODEL:\n  NOT_A_KEY: 1\n", "NOT_A_KEY"),
])
def test_a_bad_config_is_one_line_naming_the_key(tmp_path, text, named):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {RETINA / 'retinanet_R_50_FPN_1x_gn_all.yaml'}\n{text}")
    proc = subprocess.run([sys.executable, str(ROOT / "tools/describe_configs.py"), str(bad)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("describe_configs: error:") and named in err[0]


def test_bit_table_counts_parameters_like_timm_and_compares_outputs():
    rows = list(describe_configs.bit_rows(["resnetv2_50x1_bit"], 32))
    assert describe_configs.BIT_HEADER.startswith("| timm model |") and len(rows) == 6
    out = ["header", "rule", *rows]
    assert out[2].startswith("| resnetv2_50x1_bit | MODEL.BIT.DEPTH 50 MODEL.BIT.WIDTH_FACTOR 1 | "
                             "23,500,352 | 23,500,352 | 25,549,352 | ")
    assert out[2].endswith(" (1x3x32x32, random weights) |")
    assert float(out[2].split("|")[6].split()[0]) < 1e-4
    assert out[7].startswith("| resnetv2_152x4_bit | MODEL.BIT.DEPTH 152 MODEL.BIT.WIDTH_FACTOR 4 "
                             "| 928,340,224 | 928,340,224 | 936,533,224 | - |")


def test_bit_outputs_of_an_unknown_model_is_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "tools/describe_configs.py"), "--bit",
                           "--bit-outputs", "resnetv2_50x2_bit"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--bit-outputs resnetv2_50x2_bit: not a timm BiT model; valid: resnetv2_50x1_bit" \
        in proc.stderr
