"""COCO-format datasets from the config: validation (validate.py, images.py) and registration
into detectron2's catalogs (coco.py); images read with their file and dataset named in errors
(images.py: read_image_checked, ImageNamingMapper)."""
from .coco import (check_num_classes, register_coco_dataset, register_datasets,
                   register_datasets_from_cfg, register_datasets_from_lazy_cfg)
from .images import (ImageCheckReport, ImageNamingMapper, ImageReadError, Verdict, check_image,
                     check_image_files, read_image_checked)
from .validate import CleanedDataset, DatasetError, validate_coco_dict, validate_coco_file

__all__ = ["CleanedDataset", "DatasetError", "ImageCheckReport", "ImageNamingMapper",
           "ImageReadError", "Verdict", "check_image", "check_image_files", "read_image_checked",
           "check_num_classes", "register_coco_dataset", "register_datasets",
           "register_datasets_from_cfg", "register_datasets_from_lazy_cfg", "validate_coco_dict",
           "validate_coco_file"]
