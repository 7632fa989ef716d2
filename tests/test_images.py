"""gn_det.data.images: header checks agree with what detectron2's read_image really does."""
import numpy as np
import pytest
from PIL import Image

from detectron2.data.detection_utils import read_image
from gn_det.data import DatasetError, check_image, check_image_files

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
    assert check_image(path, W, H) is None
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
    why = check_image(path, W, H)
    assert why.startswith(f"is {depth} (PIL mode {Image.open(path).mode}): detectron2's reader "
                          "clips it to 0..255; convert it to 8-bit")


def test_missing_empty_unreadable_and_wrong_size(tmp_path):
    good = save(tmp_path / "good.png", "RGB")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"definitely not an image")
    (tmp_path / "folder.jpg").mkdir()
    assert check_image(str(tmp_path / "nope.jpg"), W, H) == "is missing"
    assert check_image(str(tmp_path / "empty.jpg"), W, H) == "is an empty (zero-byte) file"
    assert check_image(str(tmp_path / "junk.jpg"), W, H).startswith("is not an image PIL can")
    assert check_image(str(tmp_path / "folder.jpg"), W, H).startswith("cannot be read")
    assert check_image(good, H, W) == f"is {W}x{H} but the JSON says width={H}, height={W}"


def test_exif_rotation_swaps_the_size_like_read_image(tmp_path):
    path = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: detectron2 transposes the pixels on read
    Image.fromarray(np.stack([_PIXELS] * 3, -1)).save(path, exif=exif)
    assert read_image(path, format="BGR").shape == (W, H, 3)
    assert check_image(path, H, W) is None
    assert check_image(path, W, H) == (f"is {H}x{W} after its EXIF rotation but the JSON says "
                                       f"width={W}, height={H}")


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
