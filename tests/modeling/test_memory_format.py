"""gn_det.modeling.memory_format: MODEL.CHANNELS_LAST gives the same detector on NHWC
activations (values, gradients), survives deepcopy, and is off by default."""
import copy

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from gn_det.config import add_gn_det_config, merge_config_file
from gn_det.modeling.memory_format import _to_channels_last

from helpers import TOY_CONFIG


def build(channels_last: bool):
    cfg = add_gn_det_config(get_cfg())  # the model only: no dataset is registered
    merge_config_file(cfg, TOY_CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CHANNELS_LAST", channels_last])
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def batch():
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(3, 96, 128, generator=g) * 255, "height": 96, "width": 128}]


def test_off_by_default_and_features_stay_nchw():
    cfg, model = build(False)
    assert cfg.MODEL.CHANNELS_LAST is False and not model.backbone._forward_pre_hooks
    images = model.preprocess_image(batch())
    features = model.backbone(images.tensor)
    assert all(f.is_contiguous() for f in features.values())


def test_same_features_and_gradients_on_channels_last():
    _, nchw = build(False)
    _, nhwc = build(True)
    nhwc.load_state_dict(nchw.state_dict())
    images = nchw.preprocess_image(batch()).tensor
    f1, f2 = nchw.backbone(images), nhwc.backbone(images)
    assert set(f1) == set(f2)
    for name in f1:
        assert f2[name].is_contiguous(memory_format=torch.channels_last), name
        torch.testing.assert_close(f2[name], f1[name], atol=1e-4, rtol=1e-4)
    sum(f.square().mean() for f in f1.values()).backward()
    sum(f.square().mean() for f in f2.values()).backward()
    g1 = dict(nchw.backbone.named_parameters())
    for name, p in nhwc.backbone.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, g1[name].grad, atol=1e-4, rtol=1e-3,
                                       msg=lambda m, n=name: f"{n}: {m}")


def test_detector_runs_and_deepcopies_with_channels_last():
    _, model = build(True)
    assert copy.deepcopy(model).backbone._forward_pre_hooks  # hook is a module-level function
    model.eval()
    with torch.no_grad():
        out = model(batch())
    assert len(out) == 1 and "instances" in out[0]


def test_hook_leaves_non_image_inputs_alone():
    x = torch.rand(2, 3, 8, 8)
    (y,) = _to_channels_last(None, (x,))
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)
    assert _to_channels_last(None, (torch.rand(3, 8),)) is None
