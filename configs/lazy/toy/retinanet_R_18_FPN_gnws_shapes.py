# `make demo`'s model as a LazyConfig: the twin of configs/toy/retinanet_R_18_FPN_gnws_shapes.yaml
# (the same network: tests/config/test_lazy.py compares their network_signature). A GN+WS
# RetinaNet R-18-FPN (FPN/head 128 channels, 2 head convs) trained from scratch on the toy shapes
# (python datasets/make_shapes.py --out datasets/shapes), 160 px, 400 iterations x 8 images,
# AdamW. Train:
#   python tools/lazy_train_net.py --config-file configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py
from ..common.data.coco_format import dataloader, datasets
from ..common.models.retinanet import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

datasets.coco_format = [
    ["shapes_train", "datasets/shapes/annotations/train.json", "datasets/shapes/train"],
    ["shapes_val", "datasets/shapes/annotations/val.json", "datasets/shapes/val"]]
dataloader.train.dataset.names = ("shapes_train",)
dataloader.test.dataset.names = "shapes_val"
dataloader.train.mapper.augmentations[0].short_edge_length = (160,)
dataloader.train.mapper.augmentations[0].max_size = 160
dataloader.test.mapper.augmentations[0].short_edge_length = 160
dataloader.test.mapper.augmentations[0].max_size = 160
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

model.backbone.bottom_up.update(depth=18, res2_out_channels=64, stride_in_1x1=False,
                                freeze_at=0)  # from scratch: every stage trains
model.backbone.out_channels = 128
model.backbone.top_block.in_channels = 512
model.head.input_shape = [ShapeSpec(channels=128)] * 5
model.head.conv_dims = [128, 128]
model.num_classes = 4
# Per-channel statistics of RGB-like images (torchvision's), for training from scratch.
model.pixel_mean = [103.530, 116.280, 123.675]
model.pixel_std = [57.375, 57.120, 58.395]
model.backbone.bottom_up.update(norm="GN", ws=True)
model.backbone.update(norm="GN", ws=True)
model.head.update(norm="GN", ws=True)

optimizer.lr = 0.002
optimizer.weight_decay = 0.05
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[300, 370],
                                         num_updates=400),
    warmup_length=50 / 400, warmup_factor=0.001)
train.update(output_dir="output/toy_lazy", max_iter=400, eval_period=0, log_period=20, seed=0,
             init_checkpoint="")
train.checkpointer.period = 100
