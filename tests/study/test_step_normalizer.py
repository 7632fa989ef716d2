"""gn_det.study.step_normalizer: RetinaNet's loss normalized per optimizer step gives the same
step loss for every split of the effective batch into micro-batches, where detectron2's
per-forward EMA does not; it is the model the controlled design's cells build."""
import pytest

from detectron2.modeling import build_model
from detectron2.modeling.meta_arch import RetinaNet

from cli_harness import TINY_MODEL_OPTS
from gn_det.config import load_cfg
from gn_det.study.step_normalizer import STEP_NORMALIZED_ARCH, StepNormalizedRetinaNet

from helpers import TOY_CONFIG

POSITIVES = [5.0, 7.0, 9.0, 11.0, 4.0, 6.0, 8.0, 30.0]  # per image, two steps of 4 images
LOSSES = [1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0]  # each image's summed loss


def step_losses(model, batch: int, normalize):
    """The accumulated loss of each optimizer step of 4 images, split into micro-batches of
    `batch` images, with `normalize(model, positives) -> normalizer` per forward."""
    k, out = 4 // batch, []
    for step in range(2):
        total = 0.0
        for micro in range(k):
            first = step * 4 + micro * batch
            model._batch_images = batch
            normalizer = normalize(model, sum(POSITIVES[first:first + batch]))
            total += sum(LOSSES[first:first + batch]) / normalizer / k
        out.append(total)
    return out


def _ours(model, positives):
    return model._ema_update("loss_normalizer", positives, 100)


def _detectron2s(model, positives):
    return RetinaNet._ema_update(model, "loss_normalizer", positives, 100)


def model_for(accumulate_steps: int):
    cfg = load_cfg(TOY_CONFIG, [*TINY_MODEL_OPTS, "MODEL.DEVICE", "cpu",
                                "MODEL.META_ARCHITECTURE", STEP_NORMALIZED_ARCH,
                                "SOLVER.ACCUMULATE_STEPS", accumulate_steps])
    return build_model(cfg).train()


def test_every_split_gives_the_same_step_loss_unlike_detectron2s_ema():
    ours, theirs = {}, {}
    for batch in (4, 2, 1):
        model = model_for(4 // batch)
        assert type(model) is StepNormalizedRetinaNet and model.accumulate_steps == 4 // batch
        ours[batch] = step_losses(model, batch, _ours)
        theirs[batch] = step_losses(model, batch, _detectron2s)  # its own state: loss_normalizer
    # The first step: 100 positives per 4 images, as detectron2 starts per batch; the second
    # uses the EMA after the first step's 32 positives on 4 images.
    assert ours[4][0] == pytest.approx(sum(LOSSES[:4]) / 100)
    assert ours[4][1] == pytest.approx(sum(LOSSES[4:]) / (4 * (0.9 * 25 + 0.1 * 8)))
    for batch in (2, 1):
        assert ours[batch] == pytest.approx(ours[4], rel=1e-12)
        # detectron2's starts at 100 per micro-batch: k micro-steps sum to ~1/k of the loss
        assert theirs[batch][0] < 0.6 * theirs[4][0]


def test_evaluation_keeps_detectron2s_behaviour():
    model = model_for(2).eval()
    assert model._ema_update("loss_normalizer", 10.0, 100) == pytest.approx(0.9 * 100 + 1)
    assert model._per_image is None
