"""Trainer: detectron2's DefaultTrainer with gn_det's pieces.

Differences from DefaultTrainer: gradient accumulation (SOLVER.ACCUMULATE_STEPS), in the
precision of MODEL.PRECISION (bf16 on CPUs with bf16 units; fp16 + grad scaler on CUDA with
SOLVER.AMP), GN weight decay (SOLVER.WEIGHT_DECAY_GN), atomic and checked checkpoints that
include the optimizer state, DDP on CPU (gloo), the per-GPU batch stated in the log at start, the
precision/recall evaluator (gn_det.evaluation) by default, resumed runs that follow the config's
learning rate, no evaluation after a failed run, the small-data recipe (training augmentations
INPUT.LSJ / COLOR_JITTER / CROP, the EMA of the weights MODEL.EMA) and OUTPUT_DIR/metrics.json in
strict JSON.
"""
import logging
import warnings
import weakref


from detectron2.data import (DatasetMapper, build_detection_test_loader,
                             build_detection_train_loader)
from detectron2.engine import DefaultTrainer, create_ddp_model, hooks
from detectron2.engine.train_loop import TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import describe_norms
from ..data.images import ImageNamingMapper
from ..data.augmentation import build_train_mapper
from ..evaluation.pr_evaluator import build_pr_evaluator
from .accumulation import AccumulatingTrainer, describe_batch, scale_for_world
from ..checkpoint import AtomicCheckpointer
from .defaults import default_writers
from .ema import attach_ema, place_ema_hook
from .inference import evaluation_autocast
from .optimizer import build_optimizer
from .precision import precision_from_cfg, prepare_for_training

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
        precision = precision_from_cfg(cfg)  # MODEL.PRECISION, logged in one line
        prepare_for_training(model, precision)  # before DDP: its buckets follow the layout
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # DDP's device_ids must be None for CPU modules; detectron2 passes the local rank.
        ddp_kwargs = {"device_ids": None} if cfg.MODEL.DEVICE == "cpu" else {}
        model = create_ddp_model(model, broadcast_buffers=False, **ddp_kwargs)
        self._trainer = AccumulatingTrainer(model, data_loader, optimizer,
                                            cfg.SOLVER.ACCUMULATE_STEPS, precision=precision)
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
        return after_train_unless_failed(self, super().after_train)

    def build_hooks(self):
        """detectron2's hooks, plus the EMA of the weights when MODEL.EMA.ENABLED: updated after
        each optimizer step, evaluated instead of the trained weights, saved as the checkpoints'
        "model" (gn_det.engine.ema)."""
        hook_list = super().build_hooks()
        self.ema = ema = attach_ema(self.model, self.checkpointer, self.cfg.MODEL.EMA,
                                    "MODEL.EMA")
        if ema is None:
            return hook_list

        def test_ema_and_save_results():
            self._last_eval_results = self.test(self.cfg, ema.module)
            return self._last_eval_results

        return place_ema_hook(hook_list, ema,
                              hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, test_ema_and_save_results))

    def build_writers(self):
        """detectron2's writers, with OUTPUT_DIR/metrics.json in strict JSON (NaN as null)."""
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's, with the model run in its precision (MODEL.PRECISION) under autocast,
        its weights untouched (gn_det.engine.inference.evaluation_autocast)."""
        with evaluation_autocast(cfg, model):
            return super().test(cfg, model, evaluators)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    # detectron2's loaders, with the mapper wrapped so an image that fails to decode is one line
    # naming the file and its dataset (from data-loader workers too); the training mapper's
    # augmentations are the recipe's (INPUT.LSJ, INPUT.COLOR_JITTER, INPUT.CROP: all off =
    # detectron2's).
    @classmethod
    def build_train_loader(cls, cfg):
        mapper = ImageNamingMapper(build_train_mapper(cfg), cfg.DATASETS.TRAIN)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = ImageNamingMapper(DatasetMapper(cfg, is_train=False), [dataset_name])
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """COCO AP/AR plus precision / recall / F1 at cfg.TEST.PR's thresholds."""
        output_folder = output_folder or f"{cfg.OUTPUT_DIR}/inference/{dataset_name}"
        return build_pr_evaluator(cfg, dataset_name, output_folder)


def after_train_unless_failed(trainer, default_after_train):
    """A trainer's after_train (`default_after_train`), except that a run that failed (e.g. a NaN
    loss) is not evaluated: the evaluation hooks take `iter + 1 >= max_iter` as success, which a
    failure in the last iteration also meets; a finished loop leaves iter == max_iter."""
    if trainer.iter >= trainer.max_iter:
        return default_after_train()
    skip = tuple(getattr(hooks, name) for name in ("EvalHook", "BestCheckpointer")
                 if hasattr(hooks, name))
    trainer.storage.iter = trainer.iter
    for h in trainer._hooks:
        if not isinstance(h, skip):
            h.after_train()
