"""The controlled design's RetinaNet: GNRetinaNet with its loss normalized per optimizer step.

detectron2's RetinaNet divides its losses by an EMA of the positive anchors per forward pass
(momentum 0.9, starting at 100 for the whole batch). Split into k accumulation micro-steps of b
images, that EMA moves k times per optimizer step and starts at 100 for b images instead of k·b,
so a step of 8 images as 8 x 1 and as 1 x 8 has losses up to 8x apart, whatever the norm: the
study's controlled design would not vary the norm's batch alone. Here the normalizer is
(positives per image) x (images in the micro-batch), with positives per image an EMA updated once
per optimizer step from the whole step's images (momentum 0.9, starting at 100 / effective batch),
and used from the next step on. A step's summed loss is then the same for every split of the
effective batch. Like detectron2's EMA, it is not saved in checkpoints (a resumed cell restarts it).
"""
from detectron2.config import configurable
from detectron2.modeling.meta_arch import META_ARCH_REGISTRY

from ..modeling.retinanet import GNRetinaNet

STEP_NORMALIZED_ARCH = "StepNormalizedRetinaNet"
_MOMENTUM = 0.9  # detectron2's loss-normalizer EMA momentum
_INITIAL = 100.0  # detectron2's initial normalizer, for the optimizer's batch here


@META_ARCH_REGISTRY.register()
class StepNormalizedRetinaNet(GNRetinaNet):
    """GNRetinaNet whose loss normalizer is per image and moves once per optimizer step of
    `accumulate_steps` forward passes (see the module docstring)."""

    @configurable
    def __init__(self, *, accumulate_steps: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.accumulate_steps = accumulate_steps
        self._per_image = None      # positives per image, as of the last optimizer step
        self._step_positives = 0.0  # this optimizer step's positives and images so far
        self._step_images = 0
        self._micro = 0
        self._batch_images = 0

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["accumulate_steps"] = cfg.SOLVER.ACCUMULATE_STEPS
        return ret

    def forward(self, batched_inputs):
        if self.training:
            self._batch_images = len(batched_inputs)
        return super().forward(batched_inputs)

    def _ema_update(self, name, value, initial_value, momentum=0.9):
        if name != "loss_normalizer" or not self.training:
            return super()._ema_update(name, value, initial_value, momentum)
        images = self._batch_images
        if self._per_image is None:
            self._per_image = _INITIAL / (images * self.accumulate_steps)
        normalizer = self._per_image * images
        self._step_positives += value
        self._step_images += images
        self._micro += 1
        if self._micro == self.accumulate_steps:
            per_image = self._step_positives / self._step_images
            self._per_image = _MOMENTUM * self._per_image + (1 - _MOMENTUM) * per_image
            self._step_positives, self._step_images, self._micro = 0.0, 0, 0
        return normalizer
