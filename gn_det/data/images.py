"""Check the image files a COCO json names, reading headers only (cheap even for COCO's 118k).

Each image must exist, be non-empty, be an image PIL can identify, decode to 8 bits per channel
(detectron2's `read_image` converts to RGB/BGR with PIL, which *clips* 16-bit and float pixels to
0..255 instead of scaling them: a silently white training image), and have the width/height the
JSON declares once EXIF orientation is applied (as `read_image` applies it). Grayscale, palette,
RGBA/LA and CMYK images are fine: `read_image(..., "BGR")` converts them to 3 channels.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

from .validate import DatasetError

# PIL modes whose conversion to RGB clips values above 255 (I;16* = 16-bit, I = 32-bit int,
# F = 32-bit float).
_WIDE_MODES = {"I": "32-bit integer", "F": "32-bit float"}
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # transpose / rotate 90 / transverse / rotate 270
_FIRST = 5
_PROGRESS_FROM = 2000  # show a progress bar from this many images on


def check_image(path: str, width: int, height: int) -> Optional[str]:
    """What is wrong with one image file (a short phrase), or None when it is usable."""
    try:
        if os.path.getsize(path) == 0:
            return "is an empty (zero-byte) file"
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
            orientation = _exif_orientation(im)
    except FileNotFoundError:
        return "is missing"
    except UnidentifiedImageError:
        return "is not an image PIL can read (corrupt or another format)"
    except OSError as e:  # permission denied, a directory, truncated header, ...
        return f"cannot be read ({e.strerror or e})"
    except Exception as e:  # noqa: BLE001  PIL plugins may raise anything on a bad header
        return f"cannot be read ({type(e).__name__}: {e})"
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


def check_image_files(images: Sequence[dict], image_root: str, source: str,
                      workers: int = 8) -> None:
    """Check every image of a validated COCO `images` list; one DatasetError lists the first few
    problems (and how many there are in all)."""
    if not os.path.isdir(image_root):
        raise DatasetError(f"{source}: image root {image_root!r} is not a folder; expected the "
                           "folder the 'file_name' fields are relative to")
    jobs = [(os.path.join(image_root, img["file_name"]), img["width"], img["height"])
            for img in images]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: check_image(*job), jobs, chunksize=64)
        results = _with_progress(results, len(jobs), f"checking images of {source}")
        problems: List[Tuple[int, str]] = [(i, why) for i, why in enumerate(results) if why]
    if problems:
        missing = sum(why == "is missing" for _, why in problems)
        what = f"{missing} missing" if missing == len(problems) else f"{len(problems)} unusable"
        listed = "; ".join(f"images[{i}] {images[i]['file_name']!r} {why}"
                           for i, why in problems[:_FIRST])
        more = f" (first {_FIRST} listed)" if len(problems) > _FIRST else ""
        raise DatasetError(f"{source}: {what} of {len(images)} image files under {image_root}"
                           f"{more}: {listed}")


def _with_progress(results, total: int, desc: str):
    if total < _PROGRESS_FROM:
        return results
    from tqdm import tqdm

    return tqdm(results, total=total, desc=desc, unit="img", mininterval=1.0)
