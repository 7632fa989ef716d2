"""gn_det.config.front: one front for YAML configs and LazyConfigs; the same model from the twin
presets (configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py and its YAML), the same component
specs, and each kind's keys for weights, output folder and device."""
import pytest

from gn_det.config import (build_config_model, component_specs, is_lazy, is_lazy_file,
                           load_config, output_dir, weights, weights_key)
from gn_det.layers import ConvNormSpec

from helpers import REPO

YAML = str(REPO / "configs/toy/retinanet_R_18_FPN_gnws_shapes.yaml")
LAZY = str(REPO / "configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py")


@pytest.mark.parametrize("path, lazy", [(YAML, False), (LAZY, True)])
def test_either_kind_loads_through_one_front(path, lazy, tmp_path):
    assert is_lazy_file(path) == lazy
    opts = ([f"train.output_dir={tmp_path}"] if lazy else ["OUTPUT_DIR", str(tmp_path)])
    cfg = load_config(path, opts, device="cpu", weights="w.pth")
    assert is_lazy(cfg) == lazy
    assert output_dir(cfg) == str(tmp_path)
    assert weights(cfg) == "w.pth"
    assert weights_key(cfg) == ("train.init_checkpoint" if lazy else "MODEL.WEIGHTS")
    assert (cfg.train.device if lazy else cfg.MODEL.DEVICE) == "cpu"


def test_twin_presets_give_the_same_specs_and_network():
    yaml_cfg, lazy_cfg = (load_config(p, device="cpu", weights="") for p in (YAML, LAZY))
    specs = component_specs(yaml_cfg)
    assert specs == component_specs(lazy_cfg)
    assert list(specs) == ["BACKBONE", "FPN", "RETINANET_HEAD"]
    assert specs["BACKBONE"] == ConvNormSpec.of("GN", True)
    shapes = [{k: tuple(v.shape) for k, v in build_config_model(c).state_dict().items()}
              for c in (yaml_cfg, lazy_cfg)]
    assert shapes[0] == shapes[1]


def test_a_missing_file_of_either_kind_is_one_line(tmp_path):
    for name in ("missing.yaml", "missing.py"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_config(str(tmp_path / name))
