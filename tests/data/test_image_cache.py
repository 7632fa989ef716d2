"""gn_det.data.image_cache: verdicts cached per file (size, mtime, JSON size), so a rerun decodes
nothing and a changed file is decoded again; damaged or unwritable caches cost only a re-check."""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from gn_det.data import ImageCheckReport, check_image_files
from gn_det.data import images as images_module
from gn_det.data.image_cache import ImageCheckCache

W, H = 40, 30


@pytest.fixture
def root(tmp_path):
    """An image root with three small JPEGs, a.jpg .. c.jpg."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate("abc"):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(folder / f"{name}.jpg")
    return folder


class Counting:
    """A check that records the paths it was asked about and says they are fine."""

    def __init__(self):
        self.paths = []

    def __call__(self, path, width, height):
        self.paths.append(os.path.basename(path))
        return [None, None]


def run(cache_dir, root, names="abc", kind="k1", width=W):
    check, cache = Counting(), ImageCheckCache(cache_dir and str(cache_dir), str(root), kind, 2)
    verdicts = [cache.verdict(f"{n}.jpg", width, H, check) for n in names]
    cache.save()
    return sorted(check.paths), verdicts, cache


def test_a_rerun_checks_nothing_and_a_changed_file_is_checked_again(tmp_path, root):
    cache_dir = tmp_path / "cache"
    assert run(cache_dir, root)[0] == ["a.jpg", "b.jpg", "c.jpg"]
    (cache_file,) = cache_dir.glob("image_checks-*.json")
    saved = json.loads(cache_file.read_text())
    assert saved["kind"] == "k1" and saved["image_root"] == str(root.resolve())
    st = os.stat(root / "a.jpg")
    assert saved["files"]["a.jpg"] == [st.st_size, st.st_mtime_ns, W, H, None, None]

    paths, verdicts, cache = run(cache_dir, root)
    assert paths == [] and cache.hits == 3 and verdicts == [[None, None]] * 3
    os.utime(root / "b.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    with open(root / "c.jpg", "ab") as f:  # grown, same second
        f.write(b"\0")
    assert run(cache_dir, root)[0] == ["b.jpg", "c.jpg"]
    assert run(cache_dir, root)[0] == []
    assert run(cache_dir, root, width=W + 1)[0] == ["a.jpg", "b.jpg", "c.jpg"]  # JSON changed
    assert run(cache_dir, root, kind="k2")[0] == ["a.jpg", "b.jpg", "c.jpg"]  # checker changed


def test_missing_files_are_not_cached(tmp_path, root):
    check, cache = Counting(), ImageCheckCache(str(tmp_path / "cache"), str(root), "k", 2)
    assert cache.verdict("gone.jpg", W, H, check) == [None, None]
    cache.save()
    assert not (tmp_path / "cache").exists()  # nothing new to keep: nothing written


def test_damaged_cache_is_ignored_and_rewritten(tmp_path, root):
    cache_dir = tmp_path / "cache"
    run(cache_dir, root)
    (cache_file,) = cache_dir.glob("image_checks-*.json")
    saved = json.loads(cache_file.read_text())
    cache_file.write_text('{"kind": "k1", "files": ')  # cut short
    assert run(cache_dir, root)[0] == ["a.jpg", "b.jpg", "c.jpg"]
    assert run(cache_dir, root)[0] == []
    saved["files"]["b.jpg"] = saved["files"]["b.jpg"][:5]  # an entry of the wrong length
    cache_file.write_text(json.dumps(saved))
    assert run(cache_dir, root)[0] == ["b.jpg"]


def test_unwritable_cache_is_a_warning(tmp_path, root, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="gn_det.data.image_cache"):
        paths, verdicts, _ = run(blocker / "cache", root)
    assert paths == ["a.jpg", "b.jpg", "c.jpg"] and verdicts == [[None, None]] * 3
    assert "cannot write the image-check cache" in caplog.text
    assert "the next run checks these 3 images again" in caplog.text


def test_entries_written_meanwhile_by_another_process_are_kept(tmp_path, root):
    cache_dir = tmp_path / "cache"
    first = ImageCheckCache(str(cache_dir), str(root), "k1", 2)  # loaded while the cache is empty
    run(cache_dir, root, names="ab")  # another process checks a and b
    first.verdict("c.jpg", W, H, Counting())
    first.save()
    assert run(cache_dir, root)[0] == []


def test_no_cache_dir_caches_nothing(root):
    assert run(None, root)[0] == ["a.jpg", "b.jpg", "c.jpg"]
    assert run(None, root)[0] == ["a.jpg", "b.jpg", "c.jpg"]


def test_check_image_files_decodes_once(tmp_path, root, monkeypatch):
    images = [{"file_name": f"{n}.jpg", "width": W, "height": H} for n in "abc"]
    decoded = []
    real = images_module.check_image
    monkeypatch.setattr(images_module, "check_image",
                        lambda path, w, h: decoded.append(path) or real(path, w, h))
    reports = [check_image_files(images, str(root), "x.json", cache_dir=str(tmp_path / "c"))
               for _ in range(2)]
    assert reports == [ImageCheckReport(decoded=3, cached=0), ImageCheckReport(0, 3)]
    assert len(decoded) == 3
