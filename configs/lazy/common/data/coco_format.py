# Data for any COCO-format dataset: gn_det registers `datasets.coco_format` (validated, as the
# YAML key DATASETS.COCO_FORMAT is) before the loaders are built; the loaders and the augmentation
# are detectron2's (configs/common/data/coco.py) with gn_det's precision/recall evaluator.
# Set in a preset: datasets.coco_format, dataloader.{train,test}.dataset.names, the input sizes.
from gn_det.evaluation import PREvaluator

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

datasets = dict(coco_format=[], cache_dir="", check_images=True)

dataloader = get_config("common/data/coco.py").dataloader
dataloader.train.mapper.use_instance_mask = False
dataloader.evaluator = L(PREvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference/${..test.dataset.names}",
    iou_thresholds=[0.5, 0.75], score_thresholds=[0.05, 0.3, 0.5, 0.7], main_score=0.5,
    engine="faster", target_precision=None)
