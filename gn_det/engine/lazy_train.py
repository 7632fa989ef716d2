"""Training and evaluation from a LazyConfig (gn_det.config.lazy), as detectron2's
tools/lazyconfig_train_net.py does, with gn_det's pieces: gradient accumulation
(`train.accumulate_steps`, with `train.amp.enabled` too), atomic and checked checkpoints, the
precision/recall evaluator, datasets from the config, CPU when CUDA is absent, no evaluation
after a failed run, and the EMA of the weights (`train.ema`, gn_det.engine.ema)."""
import logging
import time
import weakref

from detectron2.config import instantiate
from detectron2.engine import hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from .accumulation import AccumulatingTrainer
from .precision import precision_from_lazy_cfg, prepare_for_training
from .defaults import default_writers
from .ema import attach_ema, place_ema_hook
from .inference import evaluation_autocast, prepare_eval_model
from ..checkpoint import AtomicCheckpointer
from ..utils.text import plural
from .trainer import after_train_unless_failed

logger = logging.getLogger(__name__)


class LazyTrainer(AccumulatingTrainer):
    """AccumulatingTrainer that skips the evaluation hooks when training failed."""

    def after_train(self):
        return after_train_unless_failed(self, super().after_train)


def build_model(cfg):
    """The model of `cfg.model` on `cfg.train.device`."""
    model = instantiate(cfg.model)
    return model.to(cfg.train.device)


def checkpointer(cfg, model, **kwargs) -> AtomicCheckpointer:
    return AtomicCheckpointer(model, cfg.train.output_dir,
                              skip_mismatched=bool(cfg.train.skip_mismatched_weights), **kwargs)


def do_test(cfg, model):
    """COCO AP plus P/R/F1 of `model` on `cfg.dataloader.test` with `cfg.dataloader.evaluator`
    ({} when the config has no evaluator)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    with evaluation_autocast(cfg, model):  # train.precision, the weights untouched
        results = inference_on_dataset(model, instantiate(cfg.dataloader.test),
                                       instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def describe_batch(cfg) -> str:
    """The log line stating per-process batch, accumulation and effective batch."""
    total = cfg.dataloader.train.get("total_batch_size", None)
    world, k = comm.get_world_size(), int(cfg.train.accumulate_steps)
    if total is None:
        return f"train.accumulate_steps={k} over {plural(world, 'process')}"
    if total % world:
        raise ValueError(f"dataloader.train.total_batch_size={total} is not divisible by the "
                         f"{world} processes; use a multiple of {world}")
    return (f"per-GPU batch: {plural(total // world, 'image')} "
            f"(dataloader.train.total_batch_size={total} over {plural(world, 'process')}), "
            f"train.accumulate_steps={k} -> effective batch {total * k}")


def do_train(cfg, resume: bool = False) -> dict:
    """Train `cfg` (resuming from its output folder's last checkpoint if `resume`), evaluate it
    at train.eval_period and at the end; returns the last evaluation's results."""
    logging.getLogger("detectron2").info("gn_det: %s", describe_batch(cfg))
    model = build_model(cfg)
    precision = precision_from_lazy_cfg(cfg)  # train.precision, logged in one line
    prepare_for_training(model, precision)  # before DDP: its buckets follow the layout
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    ddp = dict(cfg.train.get("ddp", {}))
    if cfg.train.device == "cpu":
        ddp["device_ids"] = None  # DDP's device_ids must be None for CPU modules
    model = create_ddp_model(model, **ddp)
    trainer = LazyTrainer(model, train_loader, optimizer, int(cfg.train.accumulate_steps),
                          precision=precision)
    ckpt = checkpointer(cfg, model, trainer=weakref.proxy(trainer))
    ema = attach_ema(model, ckpt, cfg.train.ema, "train.ema")  # None when off
    results = {}

    def test_and_keep():
        results.update(do_test(cfg, model if ema is None else ema.module))
        return results

    eval_hook = hooks.EvalHook(cfg.train.eval_period, test_and_keep)
    hook_list = [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(ckpt, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        eval_hook,
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period) if comm.is_main_process() else None,
    ]
    if ema is not None:
        hook_list = place_ema_hook(hook_list, ema, eval_hook)
    trainer.register_hooks(hook_list)
    ckpt.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    # the checkpoint stores the iteration that finished, so a resumed run starts after it
    start_iter = trainer.iter + 1 if resume and ckpt.has_checkpoint() else 0
    started = time.perf_counter()
    trainer.train(start_iter, cfg.train.max_iter)
    logger.info("training took %.1f s", time.perf_counter() - started)
    return results


def do_eval(cfg, resume: bool = False) -> dict:
    """Evaluate train.init_checkpoint (or, with `resume`, the output folder's last checkpoint),
    prepared for inference in train.precision with train.score_thresholds_file applied."""
    model = build_model(cfg)
    checkpointer(cfg, model).resume_or_load(cfg.train.init_checkpoint, resume=resume)
    prepare_eval_model(model, cfg)
    return do_test(cfg, create_ddp_model(model))
