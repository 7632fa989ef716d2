"""Check the image files a COCO json names by decoding each one fully, and name the file and its
dataset when an image fails to decode later, in training or evaluation.

Each image must exist, be non-empty, be an image PIL can identify, decode to 8 bits per channel
(detectron2's `read_image` converts to RGB/BGR with PIL, which *clips* 16-bit and float pixels to
0..255 instead of scaling them: a silently white training image), have the width/height the
JSON declares once EXIF orientation is applied (as `read_image` applies it), and decode to the
end (PIL's `load()`: a truncated file fails there, not at open; detectron2 would fail mid-run).
Grayscale, palette, RGBA/LA and CMYK images are fine: `read_image(..., "BGR")` converts them to 3
channels. A JPEG that decodes but does not end with the end-of-image marker FF D9 (ignoring NUL
padding) is counted in one warning: its last rows may be missing. The verdicts are cached per
file in DATASETS.CACHE_DIR (gn_det.data.image_cache), so only new or changed files are decoded.

PIL's global `ImageFile.LOAD_TRUNCATED_IMAGES` is read, never set: when some imported code has set
it, truncated images decode with a grey fill (in training too) and are only warned about.
"""
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils

from ..utils.errors import one_line
from .image_cache import ImageCheckCache
from .validate import DatasetError

logger = logging.getLogger(__name__)

# PIL modes whose conversion to RGB clips values above 255 (I;16* = 16-bit, I = 32-bit int,
# F = 32-bit float).
_WIDE_MODES = {"I": "32-bit integer", "F": "32-bit float"}
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # transpose / rotate 90 / transverse / rotate 270
_JPEG_EOI = b"\xff\xd9"
_TAIL = 4096  # bytes read from a JPEG's end to find its end marker behind NUL padding
_FIRST = 5
_PROGRESS_FROM = 2000  # show a progress bar from this many images on
NO_EOI = "no_eoi"  # Verdict.warning of a JPEG without its end marker
# What to do about a damaged image, for users of a COCO JSON and of datasets/voc_to_coco.py alike.
DAMAGED_REMEDY = ("replace it, or leave it out of the dataset: delete its entry from the COCO "
                  "JSON, or convert again with datasets/voc_to_coco.py --image-dir ... "
                  "--skip-bad-images (or without its line in the --list split file)")


class Verdict(NamedTuple):
    """What the full check found: `problem` (a phrase) makes the image unusable; `warning` (a
    kind, NO_EOI) leaves it usable but worth a look."""

    problem: Optional[str] = None
    warning: Optional[str] = None


class ImageCheckReport(NamedTuple):
    """What check_image_files did: how many images it decoded and took from the cache, and its
    one-line warning about JPEGs without an end marker (None when there are none)."""

    decoded: int
    cached: int
    warning: Optional[str] = None


class ImageReadError(DatasetError):
    """An image that detectron2 could not read during training or evaluation, naming the file and
    its dataset in one line. Rebuilt by torch in the main process from a data-loader worker's
    formatted traceback: the constructor keeps only this error's own line of it."""

    def __init__(self, message: str = ""):
        super().__init__(_own_line(message, type(self)))


def _own_line(message: str, cls: type) -> str:
    """`message`, or, when it is torch's "Caught X in DataLoader worker ... Original Traceback"
    text, the message of the last `<module>.<class>: ` line in it."""
    if "\n" not in message:
        return message
    prefixes = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    for line in reversed(message.splitlines()):
        for prefix in prefixes:
            if line.startswith(prefix):
                return line[len(prefix):]
    return message


def check_image(path: str, width: int, height: int) -> Verdict:
    """Decode one image file fully and say what is wrong with it, if anything."""
    try:
        if os.path.getsize(path) == 0:
            return Verdict("is an empty (zero-byte) file")
        with Image.open(path) as im:
            mode, (w, h), fmt = im.mode, im.size, im.format
            orientation = _exif_orientation(im)
            problem = _header_problem(mode, w, h, orientation, width, height)
            if problem:
                return Verdict(problem)
            try:
                im.load()
            except Exception as e:  # noqa: BLE001  any decoder failure is the file's fault
                return Verdict(f"cannot be decoded ({one_line(e, brief=True)}): the file is "
                               f"damaged; {DAMAGED_REMEDY}")
    except FileNotFoundError:
        return Verdict("is missing")
    except UnidentifiedImageError:
        return Verdict("is not an image PIL can read (corrupt or another format)")
    except OSError as e:  # permission denied, a directory, truncated header, ...
        return Verdict(f"cannot be read ({e.strerror or e})")
    except Exception as e:  # noqa: BLE001  PIL plugins may raise anything on a bad header
        return Verdict(f"cannot be read ({type(e).__name__}: {e})")
    if fmt == "JPEG" and not _ends_with_eoi(path):
        return Verdict(warning=NO_EOI)
    return Verdict()


def _header_problem(mode: str, w: int, h: int, orientation: int, width: int,
                    height: int) -> Optional[str]:
    if mode.startswith("I;16") or mode in _WIDE_MODES:
        depth = "16-bit" if mode.startswith("I;16") else _WIDE_MODES[mode]
        return (f"is {depth} (PIL mode {mode}): detectron2's reader clips it to 0..255; "
                "convert it to 8-bit grayscale or RGB first")
    if orientation in _SWAPS_AXES:
        w, h = h, w
    if (w, h) != (width, height):
        rotated = " after its EXIF rotation" if orientation in _SWAPS_AXES else ""
        return f"is {w}x{h}{rotated} but the JSON says width={width}, height={height}"
    return None


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001  detectron2 ignores unreadable EXIF too
        return 1


def _ends_with_eoi(path: str) -> bool:
    """Whether a JPEG ends with FF D9 (NUL bytes after it, as block-padded copies have, allowed)."""
    with open(path, "rb") as f:
        f.seek(max(os.fstat(f.fileno()).st_size - _TAIL, 0))
        return f.read().rstrip(b"\x00").endswith(_JPEG_EOI)


def check_image_files(images: Sequence[dict], image_root: str, source: str,
                      dataset: Optional[str] = None, cache_dir: Optional[str] = None,
                      workers: int = 8) -> ImageCheckReport:
    """Fully check every image of a validated COCO `images` list (verdicts cached in `cache_dir`
    when given). One DatasetError lists the first few problems (and how many there are in all);
    the report has a one-line warning about JPEGs without an end marker."""
    where = f"{source} (dataset {dataset!r})" if dataset else source
    if not os.path.isdir(image_root):
        raise DatasetError(f"{where}: image root {image_root!r} is not a folder; expected the "
                           "folder the 'file_name' fields are relative to")
    truncated_ok = bool(ImageFile.LOAD_TRUNCATED_IMAGES)
    cache = ImageCheckCache(cache_dir, image_root, f"decode-1-truncated{int(truncated_ok)}",
                            fields=len(Verdict._fields))
    jobs = [(img["file_name"], img["width"], img["height"]) for img in images]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: Verdict(*cache.verdict(*job, check_image)), jobs)
        verdicts: List[Verdict] = list(_with_progress(results, len(jobs),
                                                      f"checking images of {where}"))
    cache.save()
    decoded, cached = len(images) - cache.hits, cache.hits
    problems: List[Tuple[int, str]] = [(i, v.problem) for i, v in enumerate(verdicts)
                                       if v.problem]
    if problems:
        missing = sum(why == "is missing" for _, why in problems)
        what = f"{missing} missing" if missing == len(problems) else f"{len(problems)} unusable"
        listed = "; ".join(f"images[{i}] {images[i]['file_name']!r} {why}"
                           for i, why in problems[:_FIRST])
        more = f" (first {_FIRST} listed)" if len(problems) > _FIRST else ""
        raise DatasetError(f"{where}: {what} of {len(images)} image files under {image_root}"
                           f"{more}: {listed}")
    if truncated_ok:
        logger.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by imported code): "
                       "truncated images of %s decode with a grey fill and are not refused", where)
    no_eoi = [images[i]["file_name"] for i, v in enumerate(verdicts) if v.warning == NO_EOI]
    if not no_eoi:
        return ImageCheckReport(decoded, cached)
    first = ", ".join(repr(name) for name in no_eoi[:_FIRST])
    return ImageCheckReport(decoded, cached, (
        f"{where}: {len(no_eoi)} of {len(images)} JPEG files under {image_root} do not end with "
        f"the JPEG end marker FF D9 but decode (first {min(len(no_eoi), _FIRST)}: {first}); they "
        "may be cut short: check their bottom rows"))


def _with_progress(results: Iterable, total: int, desc: str) -> Iterable:
    if total < _PROGRESS_FROM:
        return results
    from tqdm import tqdm

    return tqdm(results, total=total, desc=desc, unit="img", mininterval=1.0)


# ------------------------------------------------------------------------------ reading, named

def read_failure(path: str, datasets: Union[str, Sequence[str]],
                 exc: BaseException) -> ImageReadError:
    """The one-line error for an image file of `datasets` (a name, or the names whose image root
    holds it) that could not be read."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    which = (f"dataset {names[0]!r}" if len(names) == 1
             else "datasets " + " or ".join(repr(n) for n in names))
    return ImageReadError(f"image file {path} of {which} cannot be read "
                          f"({one_line(exc, brief=True)}); expected a complete image file: "
                          f"{DAMAGED_REMEDY}; DATASETS.CHECK_IMAGES True finds every such file "
                          "before training")


def read_image_checked(path: str, dataset: str, format: str = "BGR") -> np.ndarray:
    """detectron2's `read_image` (EXIF rotation, conversion to `format`), with any failure raised
    as one ImageReadError naming the file and `dataset` (for tools that draw dataset images)."""
    try:
        return detection_utils.read_image(path, format=format)
    except Exception as e:  # noqa: BLE001  any reader failure is the file's fault
        raise read_failure(path, dataset, e) from e


class ImageNamingMapper:
    """Wraps a dataset mapper (detectron2's DatasetMapper): a failure inside detectron2's
    `read_image` becomes an ImageReadError naming the file and its dataset, from data-loader
    worker processes too. Other errors pass unchanged."""

    def __init__(self, mapper, dataset_names: Sequence[str]):
        self.mapper = mapper
        self.roots = _image_roots(dataset_names)

    def __call__(self, dataset_dict: dict):
        try:
            return self.mapper(dataset_dict)
        except Exception as e:
            path = _read_image_path(e)
            if path is None:
                raise
            raise read_failure(path, self.dataset_of(path), e) from e

    def dataset_of(self, path: str) -> List[str]:
        """The datasets whose image root holds `path` (the deepest root; several when they share
        it; all of them when none does)."""
        real = os.path.realpath(path)
        hits = [(len(root), name) for name, root in self.roots
                if root and real.startswith(root.rstrip(os.sep) + os.sep)]
        if not hits:
            return [name for name, _ in self.roots] or ["?"]
        deepest = max(n for n, _ in hits)
        return [name for n, name in hits if n == deepest]


def _image_roots(names: Sequence[str]) -> List[Tuple[str, str]]:
    roots = []
    for name in names:
        root = MetadataCatalog.get(name).get("image_root", None)
        roots.append((name, os.path.realpath(root) if root else ""))
    return roots


def _read_image_path(exc: BaseException) -> Optional[str]:
    """The file detectron2's `read_image` was reading when `exc` was raised inside it, or None."""
    code = detection_utils.read_image.__code__
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            path = tb.tb_frame.f_locals.get("file_name")
            return str(path) if path is not None else None
        tb = tb.tb_next
    return None
