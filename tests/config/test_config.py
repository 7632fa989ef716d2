"""gn_det.config: per-component specs, fallback to detectron2's keys, errors naming the key."""
import logging

import pytest
import torch

from detectron2.config import get_cfg
from gn_det.config import (add_gn_det_config, all_component_specs, component_spec, describe_norms,
                           load_cfg)
from gn_det.layers import detectron2_layer_norm

from helpers import TOY_CONFIG


@pytest.fixture
def cfg():
    return add_gn_det_config(get_cfg())


def test_defaults_inherit_detectron2_keys(cfg):
    specs = all_component_specs(cfg)
    assert specs["BACKBONE"].norm.type == "FrozenBN"  # MODEL.RESNETS.NORM's default
    assert all(not specs[c].norm for c in ("FPN", "RETINANET_HEAD", "BOX_HEAD", "MASK_HEAD"))
    cfg.MODEL.FPN.NORM = "GN"
    assert component_spec(cfg, "FPN").norm.type == "GN"


def test_one_line_switch_and_none(cfg):
    cfg.merge_from_list(["MODEL.NORMS.BACKBONE.TYPE", "GN", "MODEL.NORMS.BACKBONE.WS", "True",
                         "MODEL.NORMS.FPN.TYPE", "none", "MODEL.FPN.NORM", "GN"])
    assert component_spec(cfg, "BACKBONE").describe() == "GN+WS"
    assert component_spec(cfg, "FPN").describe() == "none"
    assert describe_norms(cfg).startswith("BACKBONE=GN+WS FPN=none ")


def test_group_settings_shared_and_overridden(cfg):
    cfg.MODEL.NORMS.GN.NUM_GROUPS = 16
    cfg.MODEL.NORMS.GN.EPS = 1e-6
    cfg.MODEL.NORMS.FPN.TYPE = "GN"
    cfg.MODEL.NORMS.BOX_HEAD.TYPE = "GN"
    cfg.MODEL.NORMS.BOX_HEAD.CHANNELS_PER_GROUP = 8  # overrides the shared pair as a whole
    fpn, box = component_spec(cfg, "FPN").norm, component_spec(cfg, "BOX_HEAD").norm
    assert (fpn.num_groups, fpn.channels_per_group, fpn.eps) == (16, 0, 1e-6)
    assert (box.num_groups, box.channels_per_group) == (0, 8)


def test_names_mean_what_detectron2_means(cfg):
    """An inherited detectron2 key keeps detectron2's meaning; gn_det's paper LN is LN_CHW, and
    the shared GN eps reaches the GroupNorm family only (LN keeps detectron2's 1e-6)."""
    cfg.MODEL.NORMS.GN.EPS = 1e-3
    cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM = "naiveSyncBN_N", "nnSyncBN"
    cfg.MODEL.NORMS.BOX_HEAD.TYPE, cfg.MODEL.NORMS.MASK_HEAD.TYPE = "LN_CHW", "BN"
    specs = all_component_specs(cfg)
    assert [specs[c].norm.type for c in ("BACKBONE", "FPN", "BOX_HEAD", "MASK_HEAD")] == [
        "naiveSyncBN_N", "SyncBN", "LN_CHW", "BN"]
    assert (specs["BOX_HEAD"].norm.eps, specs["MASK_HEAD"].norm.eps) == (1e-3, 1e-5)
    cfg.MODEL.RETINANET.NORM = "LN"
    if detectron2_layer_norm() is None:
        with pytest.raises(ValueError, match=r"^MODEL.RETINANET.NORM \(inherited by MODEL.NORMS."
                                             r"RETINANET_HEAD.TYPE\): norm type 'LN' is "
                                             r"detectron2's per-pixel LayerNorm"):
            component_spec(cfg, "RETINANET_HEAD")
    else:
        ln = component_spec(cfg, "RETINANET_HEAD").norm
        assert (ln.type, ln.eps) == ("LN", 1e-6)


def test_ws_convention(cfg):
    cfg.MODEL.NORMS.WS.STYLE = "mmcv"
    cfg.MODEL.NORMS.BACKBONE.WS = True
    ws = component_spec(cfg, "BACKBONE").ws
    assert ws.style == "mmcv" and ws.effective_eps == 1e-5


def test_errors_name_the_key(cfg):
    cfg.MODEL.NORMS.FPN.TYPE = "GroupNorm"
    with pytest.raises(ValueError, match=r"^MODEL.NORMS.FPN.TYPE: unknown norm type 'GroupNorm'"):
        component_spec(cfg, "FPN")
    cfg.MODEL.RESNETS.NORM = "XN"
    with pytest.raises(ValueError, match=r"^MODEL.RESNETS.NORM \(inherited by "
                                         r"MODEL.NORMS.BACKBONE.TYPE\): unknown norm type 'XN'"):
        component_spec(cfg, "BACKBONE")
    cfg.MODEL.NORMS.BOX_HEAD.NUM_GROUPS = 32
    cfg.MODEL.NORMS.BOX_HEAD.CHANNELS_PER_GROUP = 16
    with pytest.raises(ValueError, match=r"^MODEL.NORMS.BOX_HEAD: .*both set"):
        component_spec(cfg, "BOX_HEAD")
    cfg.MODEL.NORMS.WS.STYLE = "bit"
    with pytest.raises(ValueError, match=r"^MODEL.NORMS.WS: unknown WS style 'bit'"):
        component_spec(cfg, "MASK_HEAD")


def test_ws_without_norm_warns_once(cfg, caplog):
    cfg.MODEL.NORMS.MASK_HEAD.WS = True
    with caplog.at_level(logging.WARNING):
        component_spec(cfg, "MASK_HEAD")
        component_spec(cfg, "MASK_HEAD")
    assert sum("MODEL.NORMS.MASK_HEAD.WS is on but" in r.message for r in caplog.records) == 1


def test_merge_config_file_safe_yaml_and_errors(cfg, tmp_path):
    from gn_det.config import merge_config_file

    good = tmp_path / "good.yaml"
    good.write_text("MODEL:\n  NORMS:\n    FPN: {TYPE: GN, WS: True}\n")
    assert component_spec(merge_config_file(cfg, str(good)), "FPN").describe() == "GN+WS"
    evil = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    evil.write_text(f"MODEL:\n  DEVICE: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError, match=r"evil.yaml.*python tags are refused"):
        merge_config_file(cfg, str(evil))
    assert not marker.exists()
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("MODEL:\n  NORMZ: {}\n")
    with pytest.raises(KeyError, match=r"unknown.yaml.*Non-existent config key: MODEL.NORMZ"):
        merge_config_file(cfg, str(unknown))
    with pytest.raises(FileNotFoundError, match="config file 'nope.yaml' does not exist"):
        merge_config_file(cfg, "nope.yaml")
    based = tmp_path / "based.yaml"
    based.write_text("_BASE_: missing-base.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"based.yaml': cannot read '.*missing-base.yaml' "
                                                r"\(No such file or directory\); _BASE_ paths"):
        merge_config_file(cfg, str(based))


def test_load_cfg_cpu_and_errors(tiny_train_opts):
    cfg = load_cfg(TOY_CONFIG, tiny_train_opts)
    assert cfg.MODEL.DEVICE == "cpu" or torch.cuda.is_available()
    with pytest.raises(ValueError, match=r"MODEL.NORMS FPN use SyncBN, which needs GPUs"):
        if torch.cuda.is_available():
            pytest.skip("SyncBN is allowed with CUDA")
        load_cfg(TOY_CONFIG, tiny_train_opts + ["MODEL.NORMS.FPN.TYPE", "SyncBN"])
    with pytest.raises(KeyError, match=r"command-line opts: Non-existent key: SOLVER.NOPE"):
        load_cfg(TOY_CONFIG, ["SOLVER.NOPE", "1"])
