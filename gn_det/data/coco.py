"""Register COCO-format datasets named in the config, validated before any training starts.

    DATASETS:
      COCO_FORMAT:   # [name, annotation json, image root]
        - [shapes_train, datasets/shapes/annotations/train.json, datasets/shapes/train]
        - [shapes_val, datasets/shapes/annotations/val.json, datasets/shapes/val]
      TRAIN: ("shapes_train",)
      TEST: ("shapes_val",)

Each entry is validated (gn_det.data.validate: structure, ids, boxes; gn_det.data.images: every
image file decoded fully, verdicts cached per file in DATASETS.CACHE_DIR) and then registered with
detectron2's own `register_coco_instances`, so loading is detectron2's `load_coco_json` and the
metadata (json_file, image_root, evaluator_type "coco", thing_classes) is what detectron2's and
gn_det's evaluators expect.

When validation had to drop or clip boxes, the *cleaned* annotations are written once to
DATASETS.CACHE_DIR (default OUTPUT_DIR/dataset_cache, named by the source's content hash) and that
file is registered as `json_file`; the source stays in the metadata as `source_json_file`. Why a
file and not a filtering loader: COCO evaluators read `json_file` themselves with pycocotools, so
only a cleaned file gives training and evaluation the same ground truth (a NaN box left in the
evaluator's copy is an unmatched ground truth that lowers recall; a missing `area` crashes
COCOeval). A dataset that needs no cleaning is registered from its own file, with no copy.
"""
import hashlib
import logging
import os
from typing import Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..utils.file_io import write_json
from ..utils.text import plural
from .images import check_image_files
from .validate import DatasetError, validate_coco_file

logger = logging.getLogger(__name__)

# name -> (real json path, real image root, json mtime_ns, json size): what gn_det registered.
_REGISTERED: Dict[str, Tuple[str, str, int, int]] = {}
_CLEANER_VERSION = "1"  # bump when cleaning changes, so cached copies are rebuilt


def register_coco_dataset(name: str, json_file: str, image_root: str, cache_dir: str,
                          check_images: bool = True) -> bool:
    """Validate one COCO-format dataset and register it under `name`.

    Idempotent: the same name with the same (unchanged) files is a no-op and returns False; a name
    already registered with other files raises DatasetError. Returns True when it registered.
    """
    if not isinstance(name, str) or not name:
        raise DatasetError(f"dataset name {name!r} is invalid; expected a non-empty string")
    try:
        stat = os.stat(json_file)
    except OSError:
        raise DatasetError(f"{json_file}: annotation file not found (dataset {name!r}); expected "
                           "a COCO-format .json file") from None
    key = (os.path.realpath(json_file), os.path.realpath(image_root), stat.st_mtime_ns,
           stat.st_size)
    if _REGISTERED.get(name) == key:
        return False
    _check_name_free(name, key[0], key[1])

    cleaned, raw = validate_coco_file(json_file)
    if check_images:
        report = check_image_files(cleaned.data["images"], image_root, json_file, dataset=name,
                                   cache_dir=cache_dir)
        if report.warning:
            logger.warning(report.warning)
    registered_json = os.path.abspath(json_file)
    if cleaned.changed:
        registered_json = _write_cleaned(cleaned.data, raw, name, cache_dir)
        logger.warning("%s; registered %r from the cleaned copy %s", cleaned.summary(), name,
                       registered_json)

    categories = sorted(cleaned.data["categories"], key=lambda c: c["id"])
    metadata = {
        "thing_classes": [c["name"] for c in categories],
        # what load_coco_json sets when it runs; set now so evaluators work before it has
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
        "source_json_file": os.path.abspath(json_file),
    }
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, metadata, registered_json, os.path.abspath(image_root))
    _REGISTERED[name] = key
    logger.info("registered dataset %r: %d images, %d annotations, %d classes from %s", name,
                len(cleaned.data["images"]), len(cleaned.data["annotations"]), len(categories),
                json_file)
    return True


def _check_name_free(name: str, real_json: str, real_root: str):
    """A name registered elsewhere (detectron2 builtins, user code, an earlier gn_det call) may be
    replaced only when it points at the same files."""
    if name not in DatasetCatalog.list():
        return
    meta = MetadataCatalog.get(name)
    old_json = meta.get("source_json_file", meta.get("json_file", None))
    old_root = meta.get("image_root", None)
    same = (old_json is not None and old_root is not None
            and os.path.realpath(old_json) == real_json and os.path.realpath(old_root) == real_root)
    if not same:
        raise DatasetError(f"dataset name {name!r} is already registered with json_file "
                           f"{old_json!r} and image_root {old_root!r}; expected a new name for "
                           f"{real_json} (or the same files)")


def _write_cleaned(data: dict, raw: bytes, name: str, cache_dir: str) -> str:
    """Write the cleaned annotations atomically to cache_dir (reused when already there)."""
    digest = hashlib.sha256(raw + _CLEANER_VERSION.encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    path = os.path.abspath(os.path.join(cache_dir, f"{safe}-{digest}.json"))
    if os.path.isfile(path):
        return path
    try:
        os.makedirs(cache_dir, exist_ok=True)
        write_json(path, data)  # atomic: ranks writing the same copy at once are harmless
    except OSError as e:
        raise DatasetError(f"DATASETS.CACHE_DIR: cannot write the cleaned copy of dataset "
                           f"{name!r} to {cache_dir!r} ({e.strerror or e}); expected a "
                           "writable folder") from None
    return path


def _entries(entries, key: str) -> List[Tuple[str, str, str]]:
    """A COCO_FORMAT list as (name, json_file, image_root) triples; errors name `key[i]`."""
    if not isinstance(entries, (list, tuple)) and not _is_sequence_node(entries):
        raise DatasetError(f"{key} is {entries!r}; expected a list of "
                           "[name, annotation_json, image_root] lists")
    out, seen = [], {}
    for i, entry in enumerate(entries):
        entry = list(entry) if _is_sequence_node(entry) else entry
        if (not isinstance(entry, (list, tuple)) or len(entry) != 3
                or not all(isinstance(v, str) and v for v in entry)):
            raise DatasetError(f"{key}[{i}] is {entry!r}; expected "
                               "[name, annotation_json, image_root] (three non-empty strings)")
        name, json_file, image_root = entry
        if name in seen and seen[name] != (json_file, image_root):
            raise DatasetError(f"{key}[{i}]: name {name!r} is already used by "
                               "another entry with other files; expected unique names")
        seen[name] = (json_file, image_root)
        out.append((name, json_file, image_root))
    return out


def _is_sequence_node(value) -> bool:
    """An omegaconf ListConfig (LazyConfig's lists), without importing omegaconf eagerly."""
    return type(value).__name__ == "ListConfig"


def register_datasets(entries, cache_dir: str, check_images: bool = True,
                      used: Optional[Dict[str, List[str]]] = None,
                      key: str = "DATASETS.COCO_FORMAT") -> List[str]:
    """Validate and register every [name, annotation_json, image_root] of `entries` (named
    `key` in errors), then check that each dataset name in `used` ({"DATASETS.TRAIN": [...]})
    is registered. Returns the registered names."""
    names = []
    for name, json_file, image_root in _entries(entries, key):
        register_coco_dataset(name, json_file, image_root, cache_dir, check_images=check_images)
        names.append(name)
    for where, used_names in (used or {}).items():
        for i, name in enumerate(used_names):
            _check_used_dataset(f"{where}[{i}]", name, names)
    return names


def register_datasets_from_cfg(cfg) -> List[str]:
    """Validate and register every DATASETS.COCO_FORMAT entry of a YAML config, then check that
    each name in DATASETS.TRAIN / DATASETS.TEST is registered. Returns the names from
    COCO_FORMAT. (Training also calls check_num_classes; browsing a dataset does not.)"""
    cache_dir = cfg.DATASETS.CACHE_DIR or os.path.join(cfg.OUTPUT_DIR, "dataset_cache")
    return register_datasets(cfg.DATASETS.COCO_FORMAT, cache_dir, bool(cfg.DATASETS.CHECK_IMAGES),
                             {f"DATASETS.{k}": list(cfg.DATASETS[k]) for k in ("TRAIN", "TEST")})


def used_dataset_names(cfg) -> Dict[str, List[str]]:
    """The dataset names a LazyConfig's train and test loaders read, by config key."""
    used = {}
    for split in ("train", "test"):
        names = cfg.dataloader.get(split, {}).get("dataset", {}).get("names", None)
        if names is not None:
            names = [names] if isinstance(names, str) else list(names)
            used[f"dataloader.{split}.dataset.names"] = names
    return used


def register_datasets_from_lazy_cfg(cfg) -> List[str]:
    """register_datasets_from_cfg for a LazyConfig: `cfg.datasets.coco_format` (validated, as
    DATASETS.COCO_FORMAT is), then a check that the loaders' dataset names are registered."""
    d = cfg.datasets
    cache_dir = d.cache_dir or os.path.join(cfg.train.output_dir, "dataset_cache")
    return register_datasets(d.coco_format, cache_dir, bool(d.check_images),
                             used_dataset_names(cfg), key="datasets.coco_format")


def check_num_classes(cfg) -> None:
    """A one-line error when a training dataset's class count differs from the model's (a head
    with fewer outputs than the dataset's classes fails mid-training; more trains dead outputs).
    Call it after registration, before a model is trained or evaluated on the datasets."""
    key = "MODEL.RETINANET.NUM_CLASSES" if "RetinaNet" in cfg.MODEL.META_ARCHITECTURE \
        else "MODEL.ROI_HEADS.NUM_CLASSES"
    expected = cfg.MODEL.RETINANET.NUM_CLASSES if key.startswith("MODEL.RETINANET") \
        else cfg.MODEL.ROI_HEADS.NUM_CLASSES
    for name in cfg.DATASETS.TRAIN:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != expected:
            raise DatasetError(f"dataset {name!r} has {plural(len(classes), 'class')} but {key} is "
                               f"{expected}; add `{key} {len(classes)}` to the command")


def _check_used_dataset(where: str, name: str, from_cfg: List[str]):
    """A dataset named in TRAIN/TEST must be registered, and a builtin one must have its files."""
    if name not in DatasetCatalog.list():
        ours = ", ".join(from_cfg) or "none"
        raise DatasetError(f"{where}: dataset {name!r} is not registered (from "
                           f"DATASETS.COCO_FORMAT: {ours}); expected a name from "
                           "DATASETS.COCO_FORMAT or a detectron2 builtin such as coco_2017_train")
    if name in from_cfg:
        return
    meta = MetadataCatalog.get(name)
    for field in ("json_file", "image_root"):
        path: Optional[str] = meta.get(field, None)
        if path and "://" not in path and not os.path.exists(path):
            raise DatasetError(f"{where}: detectron2 builtin dataset {name!r} expects its "
                               f"{field} at {path}, which does not exist; expected the files "
                               "under $DETECTRON2_DATASETS (see datasets/README.md)")
