"""COCO-format datasets from the config: validation (validate.py, images.py) and registration
into detectron2's catalogs (coco.py)."""
from .coco import register_coco_dataset, register_datasets, register_datasets_from_cfg
from .images import check_image, check_image_files
from .validate import CleanedDataset, DatasetError, validate_coco_dict, validate_coco_file

__all__ = ["CleanedDataset", "DatasetError", "check_image", "check_image_files",
           "register_coco_dataset", "register_datasets", "register_datasets_from_cfg",
           "validate_coco_dict", "validate_coco_file"]
