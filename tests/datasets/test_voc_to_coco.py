"""The voc_to_coco command (gn_det.commands.voc_to_coco over gn_det.datasets.voc) on Pets-style
XML fixtures: 1-based inclusive VOC boxes become COCO [x, y, w, h], labels from <name> or the
file name, split lists, and refused bad/unsafe XML."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gn_det.commands import voc_to_coco
from gn_det.data import validate_coco_dict
from gn_det.datasets import voc

from helpers import REPO

ROOT = REPO
SCRIPT = ROOT / "datasets" / "voc_to_coco.py"
FIXTURES = ROOT / "tests" / "fixtures" / "voc"
GOOD, BAD = FIXTURES / "good", FIXTURES / "bad"


def convert(tmp_path, *extra):
    out = tmp_path / "out" / "trainval.json"
    code = voc_to_coco.main(["--xml-dir", str(GOOD / "xmls"), "--list", str(GOOD / "trainval.txt"),
                     "--out", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def boxes_by_image(data):
    names = {img["id"]: img["file_name"] for img in data["images"]}
    cats = {c["id"]: c["name"] for c in data["categories"]}
    out = {}
    for a in data["annotations"]:
        out.setdefault(names[a["image_id"]], []).append((cats[a["category_id"]], a["bbox"]))
    return out


@pytest.mark.parametrize("voc_box, coco_box, status", [
    ((1, 1, 1, 1), [0, 0, 1, 1], "ok"),            # the top-left pixel alone
    ((11, 6, 30, 25), [10, 5, 20, 20], "ok"),       # 20 pixels wide: 11..30 inclusive
    ((1, 1, 60, 40), [0, 0, 60, 40], "ok"),         # the whole 60x40 image
    ((41, 21, 65, 40), [40, 20, 20, 20], "clipped"),
    ((30, 10, 29, 20), None, "empty"),              # xmax < xmin
    ((70, 5, 80, 9), None, "empty"),                # right of the image
])
def test_box_conversion_is_one_based_inclusive(voc_box, coco_box, status):
    assert voc.voc_box_to_coco(voc_box, 60, 40) == (coco_box, status)


def test_convert_with_names_and_split_list(tmp_path, capsys):
    data = convert(tmp_path)
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]
    assert [img["file_name"] for img in data["images"]] == [
        "Abyssinian_1.jpg", "american_bulldog_10.jpg", "Bengal_3.jpg"]  # list order only
    assert boxes_by_image(data) == {
        "Abyssinian_1.jpg": [("cat", [10, 5, 20, 20])],
        "american_bulldog_10.jpg": [("dog", [40, 20, 20, 20]), ("dog", [4, 4, 16, 16])],
        "Bengal_3.jpg": [("cat", [0, 0, 1, 1])]}
    assert not validate_coco_dict(data, "x").changed  # registers as is: ids, areas, boxes fine
    captured = capsys.readouterr()
    assert captured.err == "voc_to_coco: warning: 1 box clipped to the image; 1 empty box " \
                           "dropped\n"
    assert "3 images, 4 boxes, 2 classes (cat, dog)" in captured.out


def test_breed_from_filename_and_options(tmp_path):
    data = convert(tmp_path, "--label", "filename", "--skip-difficult")
    assert [c["name"] for c in data["categories"]] == ["Abyssinian", "Bengal", "american_bulldog"]
    assert len(data["annotations"]) == 3  # the difficult bulldog is skipped
    data = convert(tmp_path, "--classes", "dog,cat")
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "dog"), (2, "cat")]
    assert voc.label_from_filename("great_pyrenees_173.jpg") == "great_pyrenees"


def test_without_a_list_all_xml_files_sorted(tmp_path):
    out = tmp_path / "all.json"
    assert voc_to_coco.main(["--xml-dir", str(GOOD / "xmls"), "--out", str(out)]) == 0
    names = [img["file_name"] for img in json.loads(out.read_text())["images"]]
    assert names == ["Abyssinian_1.jpg", "Bengal_3.jpg", "american_bulldog_10.jpg",
                     "not_listed_7.jpg"]


def image_dir_args(tmp_path, *extra):
    """Pets-fixture images, 60x40 JPEGs of noise, in tmp_path/images, and the converter's args."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in ("Abyssinian_1", "american_bulldog_10", "Bengal_3"):
        pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{name}.jpg", quality=95)
    return images, ["--xml-dir", str(GOOD / "xmls"), "--list", str(GOOD / "trainval.txt"),
                    "--out", str(tmp_path / "x.json"), "--image-dir", str(images), *extra]


def test_image_dir_checks_existence_and_size(tmp_path, capsys):
    images, args = image_dir_args(tmp_path)
    (images / "Bengal_3.jpg").unlink()
    assert voc_to_coco.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"voc_to_coco: bad image: {images / 'Bengal_3.jpg'} is missing",
                   f"voc_to_coco: error: --image-dir {images}: 1 of 3 images cannot be used "
                   "(one line each above); replace them, or pass --skip-bad-images to leave "
                   "them out"]
    Image.fromarray(np.zeros((60, 40, 3), np.uint8)).save(images / "Bengal_3.jpg")
    assert voc_to_coco.main(args) == 2
    assert (f"voc_to_coco: bad image: {images / 'Bengal_3.jpg'} is 40x60 but its XML "
            f"{GOOD / 'xmls' / 'Bengal_3.xml'} says 60x40") in capsys.readouterr().err
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(images / "Bengal_3.jpg")
    assert voc_to_coco.main(args) == 0


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_image_dir_refuses_images_that_do_not_decode_one_line_each(tmp_path, capsys):
    """A JPEG cut short keeps an intact header (right size), but does not decode: the check
    training runs (gn_det.data.images.check_image) finds it; each bad file is one line."""
    images, args = image_dir_args(tmp_path)
    truncate(images / "Bengal_3.jpg")
    truncate(images / "Abyssinian_1.jpg")
    with Image.open(images / "Bengal_3.jpg") as im:
        assert im.size == (60, 40)  # what the old header-only check looked at
    assert voc_to_coco.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and not (tmp_path / "x.json").exists()
    for line, name in zip(err, ("Abyssinian_1.jpg", "Bengal_3.jpg")):  # in list order
        assert line.startswith(f"voc_to_coco: bad image: {images / name} cannot be decoded "
                               "(OSError: image file is truncated")
        assert line.endswith("the file is damaged")  # the remedy is said once, below
    assert err[2] == (f"voc_to_coco: error: --image-dir {images}: 2 of 3 images cannot be used "
                      "(one line each above); replace them, or pass --skip-bad-images to leave "
                      "them out")


def test_skip_bad_images_leaves_them_out_with_their_boxes(tmp_path, capsys):
    images, args = image_dir_args(tmp_path, "--skip-bad-images")
    truncate(images / "american_bulldog_10.jpg")
    assert voc_to_coco.main(args) == 0
    out, err = capsys.readouterr()
    data = json.loads((tmp_path / "x.json").read_text())
    assert [img["file_name"] for img in data["images"]] == ["Abyssinian_1.jpg", "Bengal_3.jpg"]
    assert [img["id"] for img in data["images"]] == [1, 2]
    assert boxes_by_image(data) == {"Abyssinian_1.jpg": [("cat", [10, 5, 20, 20])],
                                    "Bengal_3.jpg": [("cat", [0, 0, 1, 1])]}
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]  # ids stay as without skip
    assert not validate_coco_dict(data, "x").changed
    (left,) = data["info"]["left_out_images"]
    assert left["file_name"] == "american_bulldog_10.jpg"
    assert left["problem"].startswith("cannot be decoded (OSError: image file is truncated")
    lines = err.splitlines()
    assert lines[0].startswith(f"voc_to_coco: left out: {images / 'american_bulldog_10.jpg'} "
                               "cannot be decoded")
    assert lines[1] == ("voc_to_coco: warning: 1 empty box dropped; 1 bad image left out with "
                        f"their 2 boxes (american_bulldog_10.jpg; all listed in the info of "
                        f"{tmp_path / 'x.json'})")
    assert "2 images, 2 boxes, 2 classes (cat, dog)" in out


def test_skip_bad_images_needs_image_dir_and_something_left(tmp_path, capsys):
    images, args = image_dir_args(tmp_path, "--skip-bad-images")
    assert voc_to_coco.main([a for a in args if a not in ("--image-dir", str(images))]) == 2
    assert capsys.readouterr().err == ("voc_to_coco: error: --skip-bad-images needs --image-dir, "
                                       "the folder of the images to check\n")
    for path in images.iterdir():
        path.write_bytes(b"")
    assert voc_to_coco.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert all(line.endswith("is an empty (zero-byte) file") for line in err[:3])
    assert err[3].endswith("none of the images can be used, so --skip-bad-images left nothing "
                           "to convert")


@pytest.mark.parametrize("xml, message", [
    ("malformed.xml", r"malformed\.xml: malformed XML at line 1 column \d+; expected a VOC"),
    ("traversal.xml", r"traversal\.xml: <filename> '\.\./\.\./etc/passwd' points outside the "
                      r"image folder \(absolute path or '\.\.'\); expected a file name relative"),
    ("absolute.xml", r"absolute\.xml: <filename> '/etc/passwd' points outside the image folder"),
    ("backslash.xml", r"backslash\.xml: <filename> 'images\\\\cat\.jpg' has a backslash"),
    ("entity.xml", r"entity\.xml: declares XML entities, which are refused"),
    ("missing_xmax.xml", r"missing_xmax\.xml: object\[0\]: <bndbox/xmax> is missing or empty"),
    ("not_a_number.xml", r"not_a_number\.xml: object\[0\]: <bndbox/xmax> is 'abc'; expected a "
                         r"number"),
    ("zero_size.xml", r"zero_size\.xml: <size> is 0x40; expected positive integer width"),
    ("wrong_root.xml", r"wrong_root\.xml: root element is <root>; expected <annotation>"),
])
def test_bad_xml_is_refused_with_one_line(xml, message):
    with pytest.raises(voc.ConversionError, match=message) as info:
        voc.parse_voc_xml(BAD / xml)
    assert "\n" not in str(info.value)


def test_missing_xml_for_listed_images(tmp_path, capsys):
    out = tmp_path / "x.json"
    args = ["--xml-dir", str(GOOD / "xmls"), "--list", str(GOOD / "with_missing.txt"),
            "--out", str(out)]
    assert voc_to_coco.main(args) == 2
    assert capsys.readouterr().err.startswith(
        f"voc_to_coco: error: {GOOD / 'with_missing.txt'}: 1 of 2 listed images have no XML in ")
    assert not out.exists()
    assert voc_to_coco.main(args + ["--skip-missing"]) == 0
    out, err = capsys.readouterr()
    assert err == "voc_to_coco: warning: 1 listed image without XML skipped\n"
    assert out.endswith(": 1 image, 1 box, 1 class (cat)\n")  # singular for one


def test_cli_refuses_traversal_and_writes_nothing(tmp_path):
    xml_dir = tmp_path / "xmls"
    xml_dir.mkdir()
    (xml_dir / "evil.xml").write_bytes((BAD / "traversal.xml").read_bytes())
    out = tmp_path / "out" / "x.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--xml-dir", str(xml_dir), "--out",
                          str(out)], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert run.stderr.startswith("voc_to_coco: error: ") and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
