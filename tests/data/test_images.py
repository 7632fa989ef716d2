"""gn_det.data.images: the full image check agrees with what detectron2's read_image really does
(8-bit modes, EXIF rotation, a real photo cut short, a JPEG without its end marker), counts and
names what it finds, and image read errors in data loaders name the file and the dataset."""
import logging

import numpy as np
import pytest
from PIL import Image, ImageFile

from detectron2.data import (DatasetCatalog, DatasetMapper, MetadataCatalog,
                             build_detection_test_loader)
from detectron2.data.detection_utils import SizeMismatchError, read_image
from gn_det.config import load_cfg
from gn_det.data import (DatasetError, ImageNamingMapper, ImageReadError, Verdict, check_image,
                         check_image_files, read_image_checked)
from gn_det.data.images import NO_EOI

from cli_harness import REAL_PHOTO, TOY_CONFIG, cut_jpeg, jpeg_without_eoi, shared_data

W, H = 40, 30
_PIXELS = (np.arange(W * H).reshape(H, W) % 251).astype(np.uint8)


def save(path, mode: str):
    """An image of mode `mode` (size W×H) at path."""
    if mode == "I;16":
        Image.fromarray((_PIXELS.astype(np.uint16) * 200)).save(path)
    elif mode == "F":
        Image.fromarray(_PIXELS.astype(np.float32) / 255).save(path)
    elif mode == "RGB":
        Image.fromarray(np.stack([_PIXELS] * 3, -1)).save(path)
    else:
        Image.fromarray(_PIXELS).convert(mode).save(path)
    return str(path)


@pytest.mark.parametrize("mode, name", [("L", "gray.png"), ("RGBA", "rgba.png"),
                                        ("LA", "la.png"), ("P", "palette.png"),
                                        ("1", "bw.png"), ("CMYK", "cmyk.jpg"),
                                        ("RGB", "rgb.jpg")])
def test_8bit_modes_pass_and_detectron2_reads_them(tmp_path, mode, name):
    path = save(tmp_path / name, mode)
    assert Image.open(path).mode == mode
    assert check_image(path, W, H) == Verdict(None, None)
    image = read_image(path, format="BGR")
    assert image.shape == (H, W, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("mode, name, depth", [("I;16", "deep.png", "16-bit"),
                                               ("I;16", "deep.tif", "16-bit"),
                                               ("F", "float.tif", "32-bit float")])
def test_wide_modes_fail_because_detectron2_clips_them(tmp_path, mode, name, depth):
    path = save(tmp_path / name, mode)
    # The reason for refusing: read_image clips to 0..255 instead of scaling, losing the image
    # (16-bit: nearly all saturated; float in 0..1: nearly all black).
    clipped = read_image(path, format="BGR")
    assert (clipped.max() <= 1) if mode == "F" else ((clipped == 255).mean() > 0.9)
    why = check_image(path, W, H).problem
    assert why.startswith(f"is {depth} (PIL mode {Image.open(path).mode}): detectron2's reader "
                          "clips it to 0..255; convert it to 8-bit")


def test_missing_empty_unreadable_and_wrong_size(tmp_path):
    save(tmp_path / "good.png", "RGB")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"definitely not an image")
    (tmp_path / "folder.jpg").mkdir()
    def problem(name, w=W, h=H):
        return check_image(str(tmp_path / name), w, h).problem
    assert problem("nope.jpg") == "is missing"
    assert problem("empty.jpg") == "is an empty (zero-byte) file"
    assert problem("junk.jpg").startswith("is not an image PIL can")
    assert problem("folder.jpg").startswith("cannot be read")
    assert problem("good.png", H, W) == f"is {W}x{H} but the JSON says width={H}, height={W}"


def test_exif_rotation_swaps_the_size_like_read_image(tmp_path):
    path = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: detectron2 transposes the pixels on read
    Image.fromarray(np.stack([_PIXELS] * 3, -1)).save(path, exif=exif)
    assert read_image(path, format="BGR").shape == (W, H, 3)
    assert check_image(path, H, W) == Verdict()
    assert check_image(path, W, H).problem == (f"is {H}x{W} after its EXIF rotation but the "
                                               f"JSON says width={W}, height={H}")


def test_check_image_files_lists_the_first_few(tmp_path):
    save(tmp_path / "ok.png", "RGB")
    images = [{"file_name": "ok.png", "width": W, "height": H}] + [
        {"file_name": f"gone_{i}.jpg", "width": W, "height": H} for i in range(7)]
    check_image_files(images[:1], str(tmp_path), "x.json")
    with pytest.raises(DatasetError) as info:
        check_image_files(images, str(tmp_path), "x.json")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"x.json: 7 missing of 8 image files under {tmp_path} "
                              "(first 5 listed): images[1] 'gone_0.jpg' is missing; ")
    assert "gone_4.jpg" in message and "gone_5.jpg" not in message
    (tmp_path / "gone_0.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"7 unusable of 8 .*'gone_0.jpg' is an empty"):
        check_image_files(images, str(tmp_path), "x.json")


def test_image_root_must_be_a_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"x.json: image root .* is not a folder"):
        check_image_files([], str(tmp_path / "nowhere"), "x.json")


# ------------------------------------------------------------------------------ full decoding

@pytest.fixture
def photo():
    """(path, width, height) of a real JPEG photo from the shared datasets."""
    path = shared_data(REAL_PHOTO)
    with Image.open(path) as im:
        return path, *im.size


def test_a_cut_photo_is_refused_because_detectron2_cannot_read_it(tmp_path, photo):
    _, w, h = photo
    cut = str(cut_jpeg(tmp_path / "cut.jpg"))
    with Image.open(cut) as im:
        assert im.size == (w, h)  # the header is intact: a header check passes it
    with pytest.raises(OSError, match="image file is truncated"):
        read_image(cut, format="BGR")  # what training would hit
    verdict = check_image(cut, w, h)
    assert verdict.problem.startswith("cannot be decoded (OSError: image file is truncated (")
    assert verdict.problem.endswith("): the file is damaged; replace it, or leave it out of the "
                                    "dataset: delete its entry from the COCO JSON, or convert "
                                    "again with datasets/voc_to_coco.py --image-dir ... "
                                    "--skip-bad-images (or without its line in the --list split "
                                    "file)")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # read, never set


def test_a_jpeg_without_end_marker_that_decodes_is_a_warning(tmp_path, photo):
    path, w, h = photo
    no_eoi = str(jpeg_without_eoi(tmp_path / "no_eoi.jpg"))
    assert np.array_equal(read_image(no_eoi, "BGR"), read_image(str(path), "BGR"))
    assert check_image(no_eoi, w, h) == Verdict(warning=NO_EOI)
    assert check_image(str(path), w, h) == Verdict()
    padded = tmp_path / "padded.jpg"  # NUL padding after a real end marker is fine
    padded.write_bytes(path.read_bytes() + b"\0" * 100)
    assert check_image(str(padded), w, h) == Verdict()


def _photos(tmp_path, photo, kinds):
    """An image root with one file per kind ('ok', 'cut', 'no_eoi') and its COCO images list."""
    path, w, h = photo
    make = {"ok": lambda p: p.write_bytes(path.read_bytes()), "cut": cut_jpeg,
            "no_eoi": jpeg_without_eoi}
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    images = []
    for i, kind in enumerate(kinds):
        make[kind](root / f"{i:02d}_{kind}.jpg")
        images.append({"file_name": f"{i:02d}_{kind}.jpg", "width": w, "height": h})
    return root, images


def test_check_image_files_names_the_file_and_dataset_and_counts_warnings(tmp_path, photo):
    root, images = _photos(tmp_path, photo, ["ok", "no_eoi", "ok", "no_eoi", "cut"])
    with pytest.raises(DatasetError) as info:
        check_image_files(images, str(root), "a.json", dataset="pets_train")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"a.json (dataset 'pets_train'): 1 unusable of 5 image files under "
                              f"{root}: images[4] '04_cut.jpg' cannot be decoded (OSError: image "
                              "file is truncated")
    report = check_image_files(images[:4], str(root), "a.json", dataset="pets_train")
    assert report.decoded == 4 and report.cached == 0  # no cache_dir: nothing cached
    assert report.warning == (f"a.json (dataset 'pets_train'): 2 of 4 JPEG files under {root} do "
                              "not end with the JPEG end marker FF D9 but decode (first 2: "
                              "'01_no_eoi.jpg', '03_no_eoi.jpg'); they may be cut short: check "
                              "their bottom rows")
    assert check_image_files(images[:1], str(root), "a.json").warning is None


def test_truncated_images_allowed_by_pil_global_are_warned_about(tmp_path, photo, monkeypatch,
                                                                 caplog):
    root, images = _photos(tmp_path, photo, ["cut"])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries do
    assert read_image(str(root / images[0]["file_name"]), "BGR").shape[:2] == (photo[2], photo[1])
    with caplog.at_level(logging.WARNING, logger="gn_det.data.images"):
        check_image_files(images, str(root), "a.json")
    assert "LOAD_TRUNCATED_IMAGES is True" in caplog.text and "not refused" in caplog.text


# ------------------------------------------------------------------------------ reading, named

def test_read_image_checked_is_read_image_or_one_line(tmp_path, photo):
    path = str(photo[0])
    assert np.array_equal(read_image_checked(path, "x"), read_image(path, format="BGR"))
    assert read_image_checked(path, "x", format="RGB").shape == (photo[2], photo[1], 3)
    cut = str(cut_jpeg(tmp_path / "cut.jpg"))
    with pytest.raises(ImageReadError) as info:
        read_image_checked(cut, "raccoon_val")
    assert str(info.value).startswith(f"image file {cut} of dataset 'raccoon_val' cannot be read "
                                      "(OSError: image file is truncated (")
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)  # a user error


@pytest.fixture
def two_datasets(tmp_path, photo):
    """Two registered datasets, 'a' (a cut photo, a good one) and 'b' in a subfolder of a's
    root; yields {name: dataset dicts}."""
    path, w, h = photo
    root_a, root_b = tmp_path / "a", tmp_path / "a" / "b"
    root_b.mkdir(parents=True)
    cut_jpeg(root_a / "cut.jpg")
    (root_a / "ok.jpg").write_bytes(path.read_bytes())
    cut_jpeg(root_b / "cut.jpg")
    dicts = {"a": [{"file_name": str(root_a / n), "image_id": i, "width": w, "height": h,
                    "annotations": []} for i, n in enumerate(["ok.jpg", "cut.jpg"])],
             "b": [{"file_name": str(root_b / "cut.jpg"), "image_id": 0, "width": w, "height": h,
                    "annotations": []}]}
    names = {k: f"_test_images_{k}" for k in dicts}
    for k, name in names.items():
        DatasetCatalog.register(name, lambda k=k: dicts[k])
        MetadataCatalog.get(name).set(image_root=str(root_a if k == "a" else root_b),
                                      thing_classes=["raccoon"])
    yield {names[k]: v for k, v in dicts.items()}
    for name in names.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_mapper_names_the_file_and_its_dataset(two_datasets):
    (a, dicts_a), (b, dicts_b) = two_datasets.items()
    cfg = load_cfg(TOY_CONFIG, ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"])
    mapper = ImageNamingMapper(DatasetMapper(cfg, is_train=False), [a, b])
    assert mapper(dicts_a[0])["image"].shape[0] == 3
    for dataset, d in ((a, dicts_a[1]), (b, dicts_b[0])):  # b's root is inside a's: the deepest
        with pytest.raises(ImageReadError) as info:
            mapper(d)
        assert str(info.value).startswith(f"image file {d['file_name']} of dataset {dataset!r} "
                                          "cannot be read (OSError: image file is truncated")
    # Errors raised elsewhere than in read_image pass unchanged (this one names its file).
    with pytest.raises(SizeMismatchError, match="ok.jpg"):
        mapper(dict(dicts_a[0], width=7))


@pytest.mark.parametrize("workers", [0, 2])
def test_data_loader_error_is_one_line_from_worker_processes(two_datasets, workers):
    (a, dicts_a), _ = two_datasets.items()
    cfg = load_cfg(TOY_CONFIG, ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"])
    mapper = ImageNamingMapper(DatasetMapper(cfg, is_train=False), [a])
    loader = build_detection_test_loader(dicts_a, mapper=mapper, num_workers=workers)
    with pytest.raises(ImageReadError) as info:
        for _ in loader:
            pass
    message = str(info.value)  # torch rebuilt it from the worker's traceback text
    assert message.startswith(f"image file {dicts_a[1]['file_name']} of dataset {a!r} cannot be "
                              "read (OSError: image file is truncated")
    assert "\n" not in message and "Traceback" not in message and "worker" not in message
