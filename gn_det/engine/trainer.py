"""Trainer: detectron2's DefaultTrainer with gn_det's pieces, and `setup_cfg` for train_net.

Differences from DefaultTrainer: gradient accumulation (SOLVER.ACCUMULATE_STEPS, with or without
SOLVER.AMP: fp16 + grad scaler on CUDA, bf16 on CPU), GN weight decay
(SOLVER.WEIGHT_DECAY_GN), atomic and checked checkpoints that include the optimizer state, DDP on
CPU (gloo), the per-GPU batch stated in the log at start, the precision/recall evaluator
(gn_det.evaluation) by default, resumed runs that follow the config's learning rate, and no
evaluation after a failed run.
"""
import logging
import warnings
import weakref

import torch

from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, create_ddp_model, hooks
from detectron2.engine import default_setup as d2_default_setup
from detectron2.engine.train_loop import TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_gn_det_config, all_component_specs, describe_norms, merge_config_file
from ..data import register_datasets_from_cfg
from ..evaluation import build_pr_evaluator
from .accumulation import AccumulatingTrainer, describe_batch, scale_for_world
from .checkpoint import AtomicCheckpointer
from .optimizer import build_optimizer

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """DefaultTrainer for GN / GN+WS detectors at 1-2 images per GPU (see module docstring)."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        world = comm.get_world_size()
        cfg = scale_for_world(cfg, world)
        logging.getLogger("detectron2").info("gn_det: %s", describe_batch(cfg, world))
        logging.getLogger("detectron2").info("gn_det norms: %s", describe_norms(cfg))
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # DDP's device_ids must be None for CPU modules; detectron2 passes the local rank.
        ddp_kwargs = {"device_ids": None} if cfg.MODEL.DEVICE == "cpu" else {}
        model = create_ddp_model(model, broadcast_buffers=False, **ddp_kwargs)
        self._trainer = AccumulatingTrainer(model, data_loader, optimizer,
                                            cfg.SOLVER.ACCUMULATE_STEPS, cfg.SOLVER.AMP.ENABLED)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(
            model, cfg.OUTPUT_DIR, skip_mismatched=cfg.MODEL.SKIP_MISMATCHED_WEIGHTS,
            trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def state_dict(self):
        """detectron2 v0.6 leaves the optimizer (SGD momentum, AMP scaler) out of checkpoints, so
        --resume restarted it from zero; later detectron2 saves it as '_trainer', as here."""
        ret = super().state_dict()
        if "_trainer" not in ret:
            ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "load_state_dict" not in DefaultTrainer.__dict__ and "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    def resume_or_load(self, resume=True):
        """detectron2's, except that a resumed run follows this config's learning rates: the
        checkpoint's scheduler state keeps the old SOLVER.BASE_LR (and its optimizer state the
        LR of the next iteration), so lowering BASE_LR to resume after a NaN loss did nothing."""
        base_lrs = list(getattr(self.scheduler, "base_lrs", []))
        super().resume_or_load(resume=resume)
        if not (resume and self.start_iter > 0 and base_lrs):
            return
        if base_lrs != list(self.scheduler.base_lrs):
            logger.info("resume: SOLVER.BASE_LR differs from the checkpoint's (%s -> %s); "
                        "continuing with this config's", self.scheduler.base_lrs, base_lrs)
        self.scheduler.base_lrs = base_lrs
        with warnings.catch_warnings():  # torch warns when get_lr is called outside step()
            warnings.simplefilter("ignore")
            lrs = self.scheduler.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr

    def after_train(self):
        """detectron2's, except that a run that failed (e.g. a NaN loss) is not evaluated: the
        evaluation hooks take `iter + 1 >= max_iter` as success, which a failure in the last
        iteration also meets; a finished loop leaves iter == max_iter."""
        if self.iter >= self.max_iter:
            return super().after_train()
        skip = tuple(getattr(hooks, name) for name in ("EvalHook", "BestCheckpointer")
                     if hasattr(hooks, name))
        self.storage.iter = self.iter
        for h in self._hooks:
            if not isinstance(h, skip):
                h.after_train()

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """COCO AP/AR plus precision / recall / F1 at cfg.TEST.PR's thresholds."""
        output_folder = output_folder or f"{cfg.OUTPUT_DIR}/inference/{dataset_name}"
        return build_pr_evaluator(cfg, dataset_name, output_folder)


def default_setup(cfg, args):
    """detectron2's default_setup (its loggers, config.yaml, seed), plus the `gn_det` logger to
    the console and OUTPUT_DIR/log.txt: without it the evaluator's P/R table and gn_det's warnings
    (e.g. dropped boxes) would reach no handler."""
    d2_default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="gn_det",
                 abbrev_name="gn_det")


def setup_cfg(config_file: str = "", opts=()):
    """detectron2 config + gn_det keys, merged from a YAML file and `opts`; CPU when CUDA is
    absent; every component's norm spec and every DATASETS.COCO_FORMAT dataset validated (and
    registered) before anything is built."""
    cfg = add_gn_det_config(get_cfg())
    if config_file:
        merge_config_file(cfg, config_file)
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as e:
        raise KeyError(f"command-line opts: {e.args[0] if e.args else e}") from None
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE != "cpu":
        logger.info("CUDA is not available: MODEL.DEVICE=%s -> cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    specs = all_component_specs(cfg)
    sync = [c for c, s in specs.items() if s.norm.type == "SyncBN"]
    if sync and cfg.MODEL.DEVICE == "cpu":
        raise ValueError(
            f"MODEL.NORMS {', '.join(sync)} use SyncBN, which needs GPUs (NCCL); on CPU use GN "
            f"(needs no synchronization across devices, which is the point) or BN")
    register_datasets_from_cfg(cfg)
    return cfg
