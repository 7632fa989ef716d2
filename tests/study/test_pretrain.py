"""gn_det.study.pretrain: crops of a COCO json, timm's own ResNetV2 pretrained on them and saved as
timm saves it, loaded into the config's BiT backbone, and the two fine-tuning runs."""
import json

import pytest
import torch
from PIL import Image

from cli_harness import TINY_MODEL_OPTS
from gn_det.config import load_cfg
from gn_det.model_zoo import get_config_file
from gn_det.commands import pretrain as command
from gn_det.study import pretrain as study

TOY = get_config_file("toy/retinanet_BiT_toy_shapes.yaml")


def test_crops_are_the_boxes_with_context_and_background_off_the_boxes(tmp_path):
    pixels = torch.zeros(60, 80, 3, dtype=torch.uint8)
    pixels[10:30, 20:40] = torch.tensor([255, 0, 0], dtype=torch.uint8)  # a red 20x20 object
    Image.fromarray(pixels.numpy()).save(tmp_path / "a.png")
    (tmp_path / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 60}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [20, 10, 20, 20],
                         "area": 400, "iscrowd": 0}],
        "categories": [{"id": 7, "name": "red"}]}))
    crops = study.collect_crops(str(tmp_path / "a.json"), str(tmp_path), size=10,
                                context=1.0, background_per_image=3)
    assert crops.classes == ["red", "background"] and crops.counts() == {"red": 1,
                                                                         "background": 3}
    assert crops.images.shape == (4, 3, 10, 10) and crops.images.dtype == torch.uint8
    assert (crops.images[0, 0] == 255).all() and (crops.images[0, 1:] == 0).all()
    assert (crops.images[1:, 0].float().mean((1, 2)) < 0.1 * 255).all()  # hardly any red


def test_timm_model_is_the_configs_backbone_and_needs_gn_ws():
    cfg = load_cfg(TOY, resolve_device=False)
    model = study.timm_bit(cfg, num_classes=5)
    assert type(model).__module__ == "timm.models.resnetv2" and model.num_classes == 5
    assert model.stem.conv.eps == 1e-8 and model.stages[0].blocks[0].norm1.num_groups == 8
    with pytest.raises(ValueError, match=r"MODEL.NORMS.BACKBONE is BN\+WS: .*set "
                       r"MODEL.NORMS.BACKBONE \{TYPE: GN, WS: True\}"):
        study.timm_bit(load_cfg(TOY, ["MODEL.NORMS.BACKBONE.TYPE", "BN"], resolve_device=False),
                       4)


def test_pretrain_then_finetune_end_to_end(tiny_shapes, tmp_path, capsys):
    ann = tiny_shapes / "annotations"
    out = tmp_path / "study"
    assert command.main([
        "--config-file", TOY, "--train-json", str(ann / "train.json"),
        "--val-json", str(ann / "val.json"), "--image-root", str(tiny_shapes / "train"),
        "--val-image-root", str(tiny_shapes / "val"), "--out", str(out), "--epochs", "1",
        "--crop-size", "32", "--batch", "16", *TINY_MODEL_OPTS, "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "100"]) == 0
    state = torch.load(out / "pretrain" / "bit_pretrained.pth", weights_only=True)
    assert "stages.3.blocks.0.conv3.weight" in state and "head.fc.weight" in state  # timm's
    record = json.loads((out / "pretrain" / "pretrain.json").read_text())
    assert record["loaded_max_abs_diff"] < 1e-4 and len(record["history"]) == 1
    summary = json.loads((out / "finetune.json").read_text())
    pretrained, scratch = summary["runs"]
    assert (pretrained["arm"], scratch["arm"]) == ("pretrained", "scratch")
    assert pretrained["weights"].endswith("bit_pretrained.pth") and scratch["weights"] == ""
    assert all(r["status"] == "done" and r["AP"] is not None for r in summary["runs"])
    log = (out / "finetune" / "pretrained" / "log.txt").read_text()
    assert "not used by the BiT backbone: 2 keys: head.fc.*" in log
    text = capsys.readouterr().out
    assert "| pretrained |" in text and "| scratch |" in text and "pretrain epoch 1/1" in text
