# detectron2's common training settings (configs/common/train.py) plus gn_det's: gradient
# accumulation (train.accumulate_steps micro-steps per optimizer step: effective batch =
# dataloader.train.total_batch_size x accumulate_steps) and MODEL.SKIP_MISMATCHED_WEIGHTS'
# twin, for tools/lazy_train_net.py.
from gn_det.config.lazy import TRAIN_DEFAULTS

from detectron2.model_zoo import get_config

train = get_config("common/train.py").train
train.update(TRAIN_DEFAULTS)
train.seed = -1
