"""gn_det.modeling.memory_format: MODEL.CHANNELS_LAST gives the same detector on NHWC
activations (values, gradients), survives deepcopy, and is off by default."""
import copy

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from gn_det.config import add_gn_det_config, merge_config_file
from gn_det.modeling.memory_format import _to_channels_last

from helpers import REPO, TOY_CONFIG


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


def test_to_channels_last_keeps_every_conv_and_norm_output_nhwc_in_bf16_training():
    """The fast path's layout: weights NHWC, the backbone's input hook once, GroupNorms with
    the fast backward; under bf16 autocast every conv and GN output of backbone, FPN and head
    stays NHWC (no reorder between layers), and the step's backward runs."""
    from gn_det.layers import GroupNorm
    from gn_det.modeling.memory_format import has_channels_last_hook, to_channels_last

    cfg = add_gn_det_config(get_cfg())
    merge_config_file(cfg, str(REPO / "configs/toy/retinanet_R_18_FPN_gnws_shapes.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CHANNELS_LAST", True])
    torch.manual_seed(0)
    model = build_model(cfg)  # GN+WS everywhere; MODEL.CHANNELS_LAST registered the hook
    params = list(model.parameters())
    to_channels_last(to_channels_last(model))
    assert list(model.parameters()) == params
    assert sum(h is _to_channels_last for h in model.backbone._forward_pre_hooks.values()) == 1
    assert has_channels_last_hook(model.backbone)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(type(m) is GroupNorm for m in norms)
    layouts = {}

    def record(module, args, out):
        if out.dim() == 4 and out.shape[-1] > 1 and out.shape[-2] > 1:
            layouts[module] = out.is_contiguous(memory_format=torch.channels_last)

    for m in convs + norms:
        m.register_forward_hook(record)
    data = batch()
    data[0]["instances"] = _instances(96, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16), EventStorage(0):
        losses = model(data)
    sum(losses.values()).backward()
    assert layouts and all(layouts.values()), [type(m).__name__ for m, v in layouts.items()
                                               if not v]
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def _instances(h, w):
    from detectron2.structures import Boxes, Instances

    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 5.0, 120.0, 90.0]]))
    inst.gt_classes = torch.tensor([0, 1])
    return inst
