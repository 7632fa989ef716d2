"""gn_det.data.augmentation: every piece of the small-data recipe keeps boxes valid (inside the
image, non-empty, each with its class) on a toy image with boxes at its borders, large-scale
jitter always gives its fixed size, BGR saturation agrees with torchvision's on RGB, all pieces
off is detectron2's DatasetMapper exactly, bad settings are one line naming the key, and the
LazyConfig piece builds the YAML recipe's list."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from gn_det.config import load_cfg
from gn_det.data.augmentation import (RandomSaturationBGR, build_train_augmentations,
                                      build_train_mapper)

from helpers import REPO

RECIPE = str(REPO / "configs/real/retinanet_R_18_FPN_gnws_recipe_cpu.yaml")
PLAIN = str(REPO / "configs/real/retinanet_R_18_FPN_gnws_cpu.yaml")
H, W = 120, 160
# XYXY boxes at the corners and edges (a thin one on the left edge) and one inside; class = index.
BOXES = [[0, 0, 30, 20], [130, 95, 160, 120], [0, 40, 4, 80], [70, 50, 90, 70], [100, 0, 160, 8]]
SIZE = ["INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160"]
PIECES = {
    "crop": ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.SIZE", "[0.3, 0.3]"],
    "color": ["INPUT.COLOR_JITTER.ENABLED", "True"],
    "lsj": ["INPUT.LSJ.ENABLED", "True", "INPUT.LSJ.IMAGE_SIZE", "[64, 96]"],
}
ALL_ON = [*PIECES["crop"], *PIECES["color"], *PIECES["lsj"], "INPUT.CROP.PROB", "0.5"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A dataset dict of a random W x H PNG with BOXES (XYXY_ABS, class = index)."""
    path = tmp_path_factory.mktemp("aug") / "toy.png"
    pixels = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    # float coordinates, as gn_det's converter writes them (detectron2 truncates resized integer
    # boxes: its transforms scale them in place in an integer array)
    annotations = [{"bbox": [float(v) for v in b], "bbox_mode": BoxMode.XYXY_ABS,
                    "category_id": i, "iscrowd": 0} for i, b in enumerate(BOXES)]
    return {"file_name": str(path), "height": H, "width": W, "image_id": 1,
            "annotations": annotations}


def recipe_cfg(*opts, config=PLAIN):
    return load_cfg(config, [*SIZE, *opts])


def map_seeded(mapper, record, seed):
    np.random.seed(seed)
    return mapper(copy.deepcopy(record))


def expected_boxes(augs, record, seed):
    """BOXES through the transforms the augmentations draw with `seed`, unclipped: (the image's
    (h, w), [N, 4] boxes)."""
    np.random.seed(seed)
    image = np.asarray(Image.open(record["file_name"]).convert("RGB"))[:, :, ::-1]
    aug_input = T.AugInput(np.ascontiguousarray(image))
    transforms = T.AugmentationList(augs)(aug_input)
    return aug_input.image.shape[:2], transforms.apply_box(np.array(BOXES, dtype=np.float64))


@pytest.mark.parametrize("piece", [*PIECES, "all"])
def test_boxes_stay_valid_and_keep_their_class(piece, toy):
    """Over 40 draws: every box lies inside the augmented image with a positive area, carries
    the class of the box it came from and is that box's transform clipped to the image; a box
    whose transform falls outside the image is dropped; crops both drop and clip boxes."""
    cfg = recipe_cfg(*(ALL_ON if piece == "all" else PIECES[piece]))
    mapper = build_train_mapper(cfg)
    dropped = clipped = 0
    for seed in range(40):
        out = map_seeded(mapper, toy, seed)
        (h, w), unclipped = expected_boxes(build_train_augmentations(cfg), toy, seed)
        assert tuple(out["image"].shape[1:]) == (h, w)
        boxes = out["instances"].gt_boxes.tensor.numpy()
        classes = out["instances"].gt_classes.tolist()
        clip = np.clip(unclipped, 0, [w, h, w, h])
        kept = [i for i, b in enumerate(clip) if b[2] - b[0] > 1e-5 and b[3] - b[1] > 1e-5]
        assert classes == kept, f"seed {seed}"
        np.testing.assert_allclose(boxes, clip[kept], atol=1e-3)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) > 0).all()
        dropped += len(BOXES) - len(kept)
        clipped += int(np.abs(clip[kept] - unclipped[kept]).max(initial=0) > 0.5)
    if piece in ("crop", "lsj", "all"):
        assert dropped > 0 and clipped > 0  # both paths were exercised
    if piece == "color":
        assert dropped == 0


def test_lsj_gives_its_fixed_size_and_pads_with_the_mean_pixel(tmp_path):
    cfg = recipe_cfg(*PIECES["lsj"], "INPUT.LSJ.MIN_SCALE", "0.2", "INPUT.LSJ.MAX_SCALE", "2.5")
    augs = T.AugmentationList(build_train_augmentations(cfg))
    pad = round(float(np.mean(cfg.MODEL.PIXEL_MEAN)))
    padded = 0
    for seed, (h, w) in enumerate([(60, 200), (300, 100), (120, 160), (64, 96), (20, 20)] * 8):
        np.random.seed(seed)
        aug_input = T.AugInput(np.full((h, w, 3), 255, np.uint8))
        augs(aug_input)
        assert aug_input.image.shape == (64, 96, 3)
        padded += int((aug_input.image[-1, -1] == pad).all())  # bottom-right corner padded
    assert padded > 0


def test_saturation_of_bgr_images_matches_torchvision_on_rgb():
    """torchvision's adjust_saturation (ITU-R 601 grey of RGB) is the reference; detectron2's
    RandomSaturation, which weighs the channels as RGB, is off on BGR input."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    rgb[:8] = [255, 0, 0]  # pure red rows: where the channel weights matter most
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    off = []
    for factor in (0.3, 0.8, 1.4):
        ours = RandomSaturationBGR(factor, factor).get_transform(bgr).apply_image(bgr)
        reference = TF.adjust_saturation(torch.from_numpy(rgb).permute(2, 0, 1), factor)
        reference = reference.permute(1, 2, 0).numpy()[:, :, ::-1].astype(int)
        assert np.abs(ours.astype(int) - reference).max() <= 2
        theirs = T.RandomSaturation(factor, factor).get_transform(bgr).apply_image(bgr)
        off.append(np.abs(theirs.astype(int) - reference).max())
    assert max(off) > 20


def test_color_jitter_changes_pixels_not_boxes(toy):
    off = map_seeded(build_train_mapper(recipe_cfg()), toy, 3)
    cfg = recipe_cfg(*PIECES["color"])
    on = map_seeded(build_train_mapper(cfg), toy, 3)
    assert on["image"].shape == off["image"].shape
    assert not torch.equal(on["image"], off["image"])
    assert len(build_train_augmentations(cfg)) == 5  # brightness, contrast, saturation + 2


@pytest.mark.parametrize("opts", [[], ["INPUT.CROP.ENABLED", "True"],
                                  ["INPUT.MIN_SIZE_TRAIN", "(64, 112)",
                                   "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range",
                                   "INPUT.RANDOM_FLIP", "vertical"]])
def test_all_pieces_off_is_detectron2s_mapper_exactly(opts, toy):
    cfg = load_cfg(PLAIN, [*SIZE, *opts])
    ours, theirs = build_train_mapper(cfg), DatasetMapper(cfg, is_train=True)
    assert repr(ours.augmentations) == repr(theirs.augmentations)
    for seed in range(6):
        a, b = map_seeded(ours, toy, seed), map_seeded(theirs, toy, seed)
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)


@pytest.mark.parametrize("opts, message", [
    (["INPUT.LSJ.MIN_SCALE", "2.0", "INPUT.LSJ.MAX_SCALE", "1.0"],
     r"^INPUT.LSJ.MIN_SCALE / INPUT.LSJ.MAX_SCALE: 2.0 / 1.0 is not a scale range"),
    (["INPUT.LSJ.IMAGE_SIZE", "[512]"], r"^INPUT.LSJ.IMAGE_SIZE: \[512\] is not an image size"),
    (["INPUT.CROP.PROB", "0.0"], r"^INPUT.CROP.PROB: 0.0 is not a probability"),
    (["INPUT.CROP.TYPE", "square"], r"^INPUT.CROP.TYPE: unknown crop type 'square'"),
    (["INPUT.CROP.SIZE", "[0.0, 0.5]"], r"^INPUT.CROP.SIZE: \[0.0, 0.5\] is not a crop size"),
    (["INPUT.COLOR_JITTER.BRIGHTNESS", "[1.2, 0.8]"],
     r"^INPUT.COLOR_JITTER.BRIGHTNESS: \[1.2, 0.8\] is not an intensity range"),
    (["INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", "[128.0]", "MODEL.PIXEL_STD", "[64.0]"],
     r"^INPUT.COLOR_JITTER.SATURATION: INPUT.FORMAT 'L' has no colour"),
])
def test_bad_settings_are_one_line_naming_the_key(opts, message):
    with pytest.raises(ValueError, match=message) as info:
        build_train_augmentations(load_cfg(RECIPE, opts))
    assert "\n" not in str(info.value)


def described(augs):
    """Augmentations as comparable values: type and settings (detectron2 v0.6's RandomApply has
    no repr, and its repr of others leaves out a setting only when it *is* the default object)."""
    def one(aug):
        if isinstance(aug, T.RandomApply):
            return "RandomApply", one(aug.aug), aug.prob
        return type(aug).__name__, {k: list(v) if isinstance(v, (list, tuple)) else v
                                    for k, v in vars(aug).items()}
    return [one(a) for a in augs]


def test_lazy_recipe_piece_builds_the_yaml_recipes_list():
    cfg = LazyConfig.load(str(REPO / "configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py"))
    piece = LazyConfig.load(str(REPO / "configs/lazy/common/data/recipe.py"))
    cfg.dataloader.train.mapper.augmentations = piece.recipe_augmentations
    lazy = instantiate(cfg.dataloader.train.mapper.augmentations)
    yaml = build_train_augmentations(load_cfg(RECIPE))
    assert described(lazy) == described(yaml)
    assert [type(a).__name__ for a in yaml] == [
        "RandomApply", "RandomBrightness", "RandomContrast", "RandomSaturationBGR", "ResizeScale",
        "FixedSizeCrop", "RandomFlip"]
    cfg.dataloader.train.mapper.augmentations.lsj.enabled = False  # a piece switched off
    names = [type(a).__name__ for a in instantiate(cfg.dataloader.train.mapper.augmentations)]
    assert "ResizeShortestEdge" in names and "FixedSizeCrop" not in names
