"""gn_det.config.lazy and configs/lazy/: every LazyConfig preset builds, trains a step and infers
on CPU; the toy preset is its YAML twin's network; one override switches one component's norm;
bad overrides and bad norms are one line naming the key; datasets come from the config."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from detectron2.config import instantiate
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from gn_det.benchmark.e2e import network_signature
from gn_det.config import load_cfg
from gn_det.data import DatasetError
from gn_det.layers import WSConv2d
from gn_det.config.lazy import call_argument, load_lazy_cfg
from gn_det.data import register_datasets_from_lazy_cfg

from cli_harness import tiny_dataset_opts
from helpers import REPO

LAZY = REPO / "configs" / "lazy"
PRESETS = sorted(str(p.relative_to(LAZY)) for p in LAZY.rglob("*.py") if "common" not in p.parts)
TOY = str(LAZY / "toy/retinanet_R_18_FPN_gnws_shapes.py")


def batch(size=64, masks=False):
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 44.0]]))
    inst.gt_classes = torch.tensor([0, 1])
    if masks:
        m = torch.zeros(2, size, size, dtype=torch.bool)
        m[0, 6:50, 4:40] = m[1, 20:44, 30:60] = True
        inst.gt_masks = BitMasks(m)
    return [{"image": torch.rand(3, size, size) * 255, "instances": inst, "height": size,
             "width": size}]


def test_the_presets_are_there():
    assert {"retinanet_R_50_FPN_1x_gn_all.py", "retinanet_R_50_FPN_1x_gnws_all.py",
            "mask_rcnn_R_50_FPN_1x_gn.py", "mask_rcnn_R_50_FPN_1x_gnws.py",
            "toy/retinanet_R_18_FPN_gnws_shapes.py", "retinanet_BiT_50x1_FPN_1x.py",
            "mask_rcnn_BiT_50x1_FPN_1x.py"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_steps_and_infers_on_cpu(preset):
    cfg = load_lazy_cfg(str(LAZY / preset), ["train.init_checkpoint=''"])
    assert cfg.train.device == "cpu" or torch.cuda.is_available()
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    mask_rcnn = "mask_rcnn" in preset
    with EventStorage(0):
        losses = model(batch(masks=mask_rcnn))
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if mask_rcnn:
        assert "loss_mask" in losses
    model.eval()
    with torch.no_grad():
        (out,) = model([{k: v for k, v in batch()[0].items() if k != "instances"}])
    assert out["instances"].image_size == (64, 64)
    norms = {type(m) for m in model.backbone.bottom_up.modules()
             if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d))}
    assert norms == {nn.GroupNorm}
    has_ws = any(isinstance(m, WSConv2d) for m in model.modules())
    assert has_ws == ("gnws" in preset or "BiT" in preset)


def test_toy_preset_is_the_network_of_its_yaml_twin():
    lazy = instantiate(load_lazy_cfg(TOY).model)
    yaml = build_model(load_cfg(str(REPO / "configs/toy/retinanet_R_18_FPN_gnws_shapes.yaml")))
    assert network_signature(lazy) == network_signature(yaml)
    assert sum(p.numel() for p in lazy.parameters()) == sum(p.numel() for p in yaml.parameters())
    assert lazy.backbone.size_divisibility == yaml.backbone.size_divisibility


@pytest.mark.parametrize("lazy_name, yaml_name", [
    ("retinanet_BiT_50x1_FPN_1x.py", "BiT/retinanet_BiT_50x1_FPN_1x.yaml"),
    ("mask_rcnn_BiT_50x1_FPN_1x.py", "BiT/mask_rcnn_BiT_50x1_FPN_1x.yaml")])
def test_bit_presets_are_the_networks_of_their_yaml_twins(lazy_name, yaml_name):
    cfg = load_lazy_cfg(str(LAZY / lazy_name), ["train.init_checkpoint=''"])
    torch.manual_seed(0)
    lazy = instantiate(cfg.model)
    yaml = build_model(load_cfg(str(REPO / "configs" / yaml_name), ["MODEL.WEIGHTS", ""]))
    assert network_signature(lazy) == network_signature(yaml)
    assert sum(p.numel() for p in lazy.parameters()) == sum(p.numel() for p in yaml.parameters())
    assert ([p.requires_grad for p in lazy.parameters()]
            == [p.requires_grad for p in yaml.parameters()])
    assert lazy.input_format == yaml.input_format == "RGB"
    assert lazy.pixel_mean.flatten().tolist() == yaml.pixel_mean.flatten().tolist() == [127.5] * 3
    assert cfg.dataloader.train.mapper.image_format == "RGB"


def test_one_override_switches_one_component():
    cfg = load_lazy_cfg(TOY, ["model.backbone.bottom_up.norm=BN",
                              "model.backbone.bottom_up.ws=False"])
    model = instantiate(cfg.model)
    stem = model.backbone.bottom_up.stem.conv1
    assert type(stem.norm) is nn.BatchNorm2d and type(stem) is not WSConv2d
    assert type(model.backbone.fpn_lateral3.norm) is nn.GroupNorm
    assert isinstance(model.backbone.fpn_lateral3, WSConv2d)
    assert type(model.head.cls_subnet[1]) is nn.GroupNorm
    defaulted = load_lazy_cfg(TOY, ["model.backbone.bottom_up.width_per_group=64"])  # an argument
    assert defaulted.model.backbone.bottom_up.width_per_group == 64  # the config leaves default


@pytest.mark.parametrize("override, error, message", [
    ("model.backbone.bottom_up.nrom=GN", KeyError,
     r"override 'model.backbone.bottom_up.nrom=GN': model.backbone.bottom_up.nrom is not a key "
     r"of the config; keys under model.backbone.bottom_up: .*\bnorm\b.*\bws\b"),
    ("model.head.norm=GNN", ValueError, r"^model.head.norm: unknown norm type 'GNN'; valid: "),
    ("model.backbone.norm={type: GN, num_groups: 5}", ValueError,  # found where it is built
     r"^layer fpn: GN with G=5 groups needs C=128 divisible by G"),
    ("train.max_iter=abc", ValueError,
     r"train.max_iter is a number \(400\); expected a number"),
    ("train.max_iter", ValueError, r"overrides: cannot parse 'train.max_iter'"),
    ("nope.x=1", KeyError, r"nope.x is not a key of the config; keys under nope: none"),
])
def test_bad_override_is_one_line_naming_the_key(override, error, message):
    with pytest.raises(error, match=message) as e:
        cfg = load_lazy_cfg(TOY, [override])
        instantiate(cfg.model)  # group counts are checked where the layer is built
    assert "\n" not in str(e.value)


def test_added_key_and_bad_files(tmp_path):
    cfg = load_lazy_cfg(TOY, ["+train.note=mine"])
    assert cfg.train.note == "mine"
    with pytest.raises(FileNotFoundError, match="config file 'nope.py' does not exist"):
        load_lazy_cfg("nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("model = dict(\n")
    with pytest.raises(ValueError, match=r"bad.py': Python syntax error at line \d+"):
        load_lazy_cfg(str(bad))
    raises = tmp_path / "raises.py"
    raises.write_text("import no_such_module_here\n")
    with pytest.raises(ValueError, match=r"raises.py': cannot be loaded \(ModuleNotFoundError"):
        load_lazy_cfg(str(raises))


def test_datasets_come_from_the_config(tiny_shapes, tmp_path):
    entries = tiny_dataset_opts(tiny_shapes, "lazytiny")[1]
    cfg = load_lazy_cfg(TOY, [f"datasets.coco_format={entries}",
                              "dataloader.train.dataset.names=[lazytiny_train]",
                              "dataloader.test.dataset.names=lazytiny_val",
                              f"train.output_dir={tmp_path}"])
    assert register_datasets_from_lazy_cfg(cfg) == ["lazytiny_train", "lazytiny_val"]
    loader = instantiate(copy.deepcopy(cfg.dataloader.test))
    assert len(loader.dataset) == 4
    assert cfg.dataloader.evaluator.output_dir == f"{tmp_path}/inference/lazytiny_val"
    cfg.dataloader.test.dataset.names = "not_there"
    with pytest.raises(DatasetError, match=r"dataloader.test.dataset.names\[0\]: dataset "
                                           r"'not_there' is not registered"):
        register_datasets_from_lazy_cfg(cfg)
    cfg.datasets.coco_format = [["x", str(Path(tmp_path) / "none.json"), str(tmp_path)]]
    with pytest.raises(DatasetError, match=r"none.json: annotation file not found"):
        register_datasets_from_lazy_cfg(cfg)


def test_call_argument_is_the_config_value_or_the_targets_default():
    cfg = load_lazy_cfg(TOY)
    assert call_argument(cfg.model, "num_classes") == cfg.model.num_classes == 4
    assert "test_score_thresh" not in cfg.model  # RetinaNet's own default applies
    assert call_argument(cfg.model, "test_score_thresh") == 0.05
    with pytest.raises(KeyError, match="not_an_argument: not set in the config"):
        call_argument(cfg.model, "not_an_argument")
