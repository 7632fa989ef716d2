"""Worker for test_trainer's 2-process run: trains, then saves this rank's weights and the loss on
a fixed batch (all training images, no augmentation) before and after training."""
import torch

from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from gn_det.config import load_cfg
from gn_det.data import register_datasets_from_cfg
from gn_det.engine import Trainer


def fixed_batch_loss(model, cfg):
    size = cfg.INPUT.MIN_SIZE_TEST
    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(size, size)],
                           image_format=cfg.INPUT.FORMAT)
    batch = [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])]
    # RetinaNet divides its losses by an EMA of the positive-anchor count that every training
    # forward updates: fix it, so before and after compare the same quantity.
    saved = getattr(model, "loss_normalizer", None)
    model.loss_normalizer = 100.0
    with torch.no_grad(), EventStorage(0):
        loss = sum(model(batch).values()).item()
    if saved is None:
        del model.loss_normalizer
    else:
        model.loss_normalizer = saved
    return loss


def train_worker(config_file, opts, dump_dir):
    rank = comm.get_rank()
    seed_all_rng(0)  # the data sampler's shared seed comes from numpy: fix the image order
    cfg = load_cfg(config_file, list(opts) + ["OUTPUT_DIR", f"{dump_dir}/rank{rank}"])
    register_datasets_from_cfg(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    before = fixed_batch_loss(model, cfg)
    trainer.train()
    after = fixed_batch_loss(model, cfg)
    torch.save({"model": model.state_dict(), "loss_before": before, "loss_after": after},
               f"{dump_dir}/rank{rank}.pt")
