"""An exponential moving average (EMA) of the weights while training (MODEL.EMA, train.ema):
timm's ModelEmaV3 (parameters averaged, buffers such as BN statistics copied from the trained
model) updated by a detectron2 hook after every optimizer step (with gradient accumulation: after
the real step, never after a micro-step), evaluated instead of the trained weights.

Checkpoints: their "model" holds the EMA weights, so model_final.pth deploys the averaged model to
everything that reads "model" (--eval-only, gn-det-export, detectron2's predictors); the trained
weights and the update count sit under "ema" ({"training_model", "updates"}), which --resume
restores (the checkpointer has just loaded "model" into the trained model: it becomes the EMA
again and the trained weights come back). Resumed without EMA, a run continues from the EMA
weights; an EMA started from MODEL.WEIGHTS (not resumed) starts at those weights.
"""
from typing import List, Mapping, Optional

from timm.utils import ModelEmaV3
from torch import nn

from detectron2.engine import hooks
from detectron2.engine.train_loop import HookBase

from ..config.defaults import EMA_DEFAULTS

CHECKPOINT_KEY = "ema"


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel."""
    return getattr(model, "module", model)


class EMAHook(HookBase):
    """Keeps `module`, the EMA of `model`'s weights, one update per optimizer step (the trainer's
    iteration): ema = d_n * ema + (1 - d_n) * weights at the n-th update, with
    d_n = min(decay, 1 - n ** -warmup_power) (timm's warm-up, gamma 1: the averaging window grows
    with the run, so short runs are not dominated by their first weights), or d_n = decay with
    warmup_power 0; d_1 = 0 copies the weights. A checkpointable (state_dict / load_state_dict,
    module docstring)."""

    def __init__(self, model: nn.Module, decay: float = EMA_DEFAULTS["decay"],
                 warmup_power: float = EMA_DEFAULTS["warmup_power"]):
        self.model = _unwrap(model)
        self.ema = ModelEmaV3(self.model, decay=decay, use_warmup=warmup_power > 0,
                              warmup_gamma=1.0, warmup_power=warmup_power or 1.0,
                              exclude_buffers=True)
        self.updates = 0
        self._restored = False

    @property
    def module(self) -> nn.Module:
        """The averaged model (eval mode): what evaluation runs and checkpoints save."""
        return self.ema.module

    def decay(self, update: int) -> float:
        """The decay of update number `update` (1 = the first, which copies the weights)."""
        return self.ema.get_decay(update)

    def before_train(self):
        # The copy was made when the model was built: start from the weights training starts
        # from (MODEL.WEIGHTS), unless a resumed checkpoint restored the average.
        if not self._restored:
            self.ema.set(self.model)

    def after_step(self):
        self.updates += 1
        self.ema.update(self.model, step=self.updates)

    def state_dict(self) -> dict:
        return {"training_model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore from a checkpoint whose "model" the checkpointer has just loaded into the
        trained model: that becomes the EMA, and the trained weights are put back."""
        self.ema.set(self.model)
        self.model.load_state_dict(state["training_model"])
        self.updates = int(state["updates"])
        self._restored = True


def ema_settings(settings: Optional[Mapping], where: str) -> Optional[dict]:
    """The EMA's decay and warmup_power from MODEL.EMA / train.ema (`where` names it in errors),
    or None when it is off."""
    def key(name: str) -> str:  # YAML's keys are upper case, LazyConfig's lower case
        return f"{where}.{name if where.islower() else name.upper()}"

    values = dict(EMA_DEFAULTS)
    for name, value in (settings or {}).items():
        if name.lower() not in values:
            raise KeyError(f"{where}.{name}: not an EMA setting; expected one of "
                           f"{', '.join(key(k) for k in values)}")
        values[name.lower()] = value
    if not values.pop("enabled"):
        return None
    decay, power = float(values["decay"]), float(values["warmup_power"])
    if not 0 < decay < 1:
        raise ValueError(f"{key('decay')}: {decay} is not a decay; expected 0 < decay < 1, "
                         "e.g. 0.999")
    if power < 0:
        raise ValueError(f"{key('warmup_power')}: {power} is negative; expected e.g. 0.75, or 0 "
                         "for no warm-up")
    return {"decay": decay, "warmup_power": power}


def attach_ema(model: nn.Module, checkpointer, settings: Optional[Mapping],
               where: str) -> Optional[EMAHook]:
    """An EMAHook for `model` with MODEL.EMA / train.ema's settings (None when off), wired into
    `checkpointer` as the module docstring says."""
    chosen = ema_settings(settings, where)
    if chosen is None:
        return None
    hook = EMAHook(model, **chosen)
    checkpointer.saved_model = hook.module
    checkpointer.checkpointables[CHECKPOINT_KEY] = hook
    return hook


def place_ema_hook(hook_list: List[Optional[HookBase]], ema: EMAHook,
                   eval_hook: HookBase) -> List[Optional[HookBase]]:
    """`hook_list` with `ema` before the first checkpointer or evaluation hook (so both see this
    step's average) and every EvalHook replaced by `eval_hook` (which evaluates ema.module)."""
    first = next((i for i, h in enumerate(hook_list)
                  if isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook))), len(hook_list))
    out = [eval_hook if isinstance(h, hooks.EvalHook) else h for h in hook_list]
    return out[:first] + [ema] + out[first:]
