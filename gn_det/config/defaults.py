"""add_gn_det_config(cfg): gn_det's keys in a detectron2 config, with their defaults and what
each means. The per-component norm node, MODEL.NORMS, is read by gn_det.config.specs."""
from detectron2.config import CfgNode as CN

from .specs import COMPONENTS


def add_gn_det_config(cfg: CN) -> CN:
    """Add gn_det's keys to a detectron2 config (in place; also returned)."""
    _add_norm_config(cfg)
    _add_train_config(cfg)
    _add_data_config(cfg)
    _add_eval_config(cfg)
    _add_bit_config(cfg)
    _add_recipe_config(cfg)
    return cfg


# The EMA of the weights (gn_det.engine.ema), for YAML (MODEL.EMA, upper case) and LazyConfig
# (train.ema) configs alike.
EMA_DEFAULTS = {"enabled": False, "decay": 0.999, "warmup_power": 0.75}


def _add_recipe_config(cfg: CN):
    # The small-data recipe's training augmentations (gn_det.data.augmentation), each piece on its
    # own; all off = detectron2's resize + flip. Large-scale jitter: resize into the IMAGE_SIZE
    # box ([height, width]) at a scale drawn from [MIN_SCALE, MAX_SCALE], then a random
    # IMAGE_SIZE window (padded right / bottom when smaller, with PAD_VALUE; < 0 = the mean of
    # MODEL.PIXEL_MEAN); it replaces INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN. A multiple of 128
    # costs RetinaNet no padding.
    cfg.INPUT.LSJ = CN({"ENABLED": False, "IMAGE_SIZE": [512, 512], "MIN_SCALE": 0.5,
                        "MAX_SCALE": 2.0, "PAD_VALUE": -1.0})
    # Colour jitter: brightness, contrast and saturation intensities drawn from [lo, hi] per
    # image (1 = unchanged; [1.0, 1.0] leaves one out), in INPUT.FORMAT's channel order.
    cfg.INPUT.COLOR_JITTER = CN({"ENABLED": False, "BRIGHTNESS": [0.7, 1.3],
                                 "CONTRAST": [0.7, 1.3], "SATURATION": [0.7, 1.3]})
    # detectron2's random crop (INPUT.CROP.ENABLED / TYPE / SIZE) applied to this share of the
    # images; boxes are clipped to the crop and those cut off are dropped.
    cfg.INPUT.CROP.PROB = 1.0
    # An exponential moving average of the weights, updated after every optimizer step with
    # decay min(DECAY, 1 - n ** -WARMUP_POWER) at the n-th update (WARMUP_POWER 0: DECAY from the
    # start), evaluated instead of the trained weights and saved as the checkpoints' "model" (the
    # trained weights under "ema", for --resume).
    cfg.MODEL.EMA = CN({k.upper(): v for k, v in EMA_DEFAULTS.items()})


def _add_bit_config(cfg: CN):
    # BiT ResNetV2 backbones (gn_det.modeling.bit: build_gn_bit_backbone, build_gn_bit_fpn_backbone,
    # build_gn_retinanet_bit_fpn_backbone); their norm + WS: MODEL.NORMS.BACKBONE.
    bit = cfg.MODEL.BIT = CN()
    bit.DEPTH = 50  # 50, 101, 152 (timm's resnetv2_<DEPTH>x<WIDTH_FACTOR>_bit), or 0 = custom
    bit.WIDTH_FACTOR = 1  # timm's BiT: 50x1, 50x3, 101x1, 101x3, 152x2, 152x4
    bit.BLOCKS_PER_STAGE = []  # DEPTH 0 only: blocks in res2-res5, e.g. [1, 1, 1, 1]
    bit.STEM_OUT_CHANNELS = 0  # 0 = 64 x WIDTH_FACTOR
    bit.RES2_OUT_CHANNELS = 0  # 0 = 256 x WIDTH_FACTOR; doubles per stage
    bit.STEM_TYPE = "fixed"  # BiT's: zero pad 1 + 3x3/2 max-pool; "" = max-pool padding 1
    bit.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    bit.FINAL_NORM = True  # timm's final norm + ReLU applied to res5 (its forward_features)
    bit.WS_EPS = 1e-8  # BiT's StdConv2d eps when MODEL.NORMS.BACKBONE.WS; 0 = MODEL.NORMS.WS.EPS


def _add_data_config(cfg: CN):
    # COCO-format datasets registered (after validation) by gn_det.data.register_datasets_from_cfg:
    # [[name, annotation_json, image_root], ...]; DATASETS.TRAIN / TEST then use the names.
    cfg.DATASETS.COCO_FORMAT = []
    # Check every image file at registration (exists, 8-bit, size as in the JSON, decodes fully),
    # verdicts cached per file in CACHE_DIR; off: a file that fails later is still named.
    cfg.DATASETS.CHECK_IMAGES = True
    # Where cleaned copies of annotation files and image verdicts go; "" = OUTPUT_DIR/dataset_cache.
    cfg.DATASETS.CACHE_DIR = ""


def _add_eval_config(cfg: CN):
    # Precision / recall / F1 of gn_det.evaluation.PREvaluator (build_pr_evaluator): at each IoU
    # (the first is the main one: best-F1 thresholds, PR curves) and each score threshold (a
    # detection counts when score >= threshold); MAIN_SCORE is the one of the logged table.
    cfg.TEST.PR = CN()
    cfg.TEST.PR.IOU_THRESHOLDS = [0.5, 0.75]
    cfg.TEST.PR.SCORE_THRESHOLDS = [0.05, 0.3, 0.5, 0.7]
    cfg.TEST.PR.MAIN_SCORE = 0.5
    # The COCOeval engine: "faster" (faster-coco-eval) or "pycocotools" (the reference, slower;
    # same numbers). thresholds.json's rule: per class the lowest score reaching this precision;
    # 0 = the best-F1 score.
    cfg.TEST.PR.ENGINE = "faster"
    cfg.TEST.PR.TARGET_PRECISION = 0.0


def _add_train_config(cfg: CN):
    # Micro-steps per optimizer step: effective batch = IMS_PER_BATCH * ACCUMULATE_STEPS.
    cfg.SOLVER.ACCUMULATE_STEPS = 1
    # Weight decay of GN/LN_CHW/IN (nn.GroupNorm) affine parameters (Detectron's WEIGHT_DECAY_GN).
    cfg.SOLVER.WEIGHT_DECAY_GN = 0.0
    # "SGD" (detectron2's, with SOLVER.MOMENTUM / NESTEROV) or "AdamW" (decoupled weight decay;
    # takes a ~10-100x smaller BASE_LR than SGD).
    cfg.SOLVER.OPTIMIZER = "SGD"
    # torch's fused optimizer step (one kernel over all parameters) where torch has it for the
    # parameters' device; the same update up to fp32 rounding, and faster on CPU. False = the loop.
    cfg.SOLVER.FUSED = True
    # MODEL.WEIGHTS tensors whose shape differs from the model's (e.g. a classifier trained for
    # another NUM_CLASSES): False = refuse the file, naming the keys; True = leave those layers at
    # their initialization, with a warning naming them. Resuming never skips.
    cfg.MODEL.SKIP_MISMATCHED_WEIGHTS = False
    # gn_det backbones: channels_last (NHWC) activations on CPU from the backbone on
    # (gn_det.modeling.memory_format; measured in docs/PERFORMANCE.md).
    cfg.MODEL.CHANNELS_LAST = False
    # Training and inference precision (gn_det.engine.precision): "auto" (bf16 on a CPU with
    # AMX-BF16 or AVX-512 BF16, fp32 on other CPUs; on CUDA fp32, or fp16 with SOLVER.AMP.ENABLED),
    # "fp32", "bf16" or "fp16" (CUDA only). bf16 / fp16 also run channels_last.
    cfg.MODEL.PRECISION = "auto"
    # bf16 asked for (or auto with SOLVER.AMP.ENABLED) where the hardware lacks it: "fp32" =
    # fall back with a warning, "error" = refuse, "none" = run bf16 anyway (slowly).
    cfg.MODEL.PRECISION_FALLBACK = "fp32"
    # Per-class score thresholds to infer with: a thresholds.json (tools/evaluate.py, PREvaluator)
    # applied to the model's outputs at --eval-only and in the export (classes it lacks keep
    # MODEL.RETINANET.SCORE_THRESH_TEST; matched by name to DATASETS.TEST[0]'s classes); "" = none.
    cfg.MODEL.SCORE_THRESHOLDS_FILE = ""


def _add_norm_config(cfg: CN):
    norms = cfg.MODEL.NORMS = CN()
    norms.GN = CN({"NUM_GROUPS": 0, "CHANNELS_PER_GROUP": 0, "EPS": 1e-5})
    norms.WS = CN({"STYLE": "timm", "EPS": 0.0})
    for component in COMPONENTS:
        norms[component] = CN({"TYPE": "", "WS": False, "NUM_GROUPS": 0,
                               "CHANNELS_PER_GROUP": 0, "EPS": 0.0})
