"""Image-check verdicts cached per file, so that a rerun decodes only new or changed images.

One JSON file per image root in the dataset cache (DATASETS.CACHE_DIR, default
OUTPUT_DIR/dataset_cache), `image_checks-<hash of the root's real path>.json`, holding per file
name [size, mtime_ns, width, height, *verdict]: a file whose size or modification time changed, or
whose width/height in the JSON changed, is checked again. A different `kind` (the checker's
version and settings) discards the whole file. Written atomically, merged with what another
process (another rank, another dataset of the same root) wrote meanwhile.
"""
import hashlib
import logging
import os
import threading
from typing import Callable, Dict, List, Optional, Sequence

from ..utils.file_io import JSONFileError, read_json, write_json

logger = logging.getLogger(__name__)

Check = Callable[[str, int, int], Sequence]  # (path, width, height) -> a JSON-able verdict


class ImageCheckCache:
    """`check`'s verdicts (`fields` values each) for the files under one image root;
    `cache_dir=None` caches nothing."""

    def __init__(self, cache_dir: Optional[str], image_root: str, kind: str, fields: int):
        self.image_root, self.kind, self.fields = image_root, kind, fields
        self.real_root = os.path.realpath(image_root)
        self.path = None
        if cache_dir:
            digest = hashlib.sha256(self.real_root.encode()).hexdigest()[:16]
            self.path = os.path.join(cache_dir, f"image_checks-{digest}.json")
        self.entries: Dict[str, list] = self._load()
        self.hits = self.misses = 0
        self._new: Dict[str, list] = {}
        self._lock = threading.Lock()

    def _load(self) -> Dict[str, list]:
        if self.path is None or not os.path.isfile(self.path):
            return {}
        try:
            data = read_json(self.path, "image-check cache")
        except JSONFileError as e:  # a damaged cache only costs a re-check
            logger.info("ignoring the image-check cache: %s", e)
            return {}
        if (not isinstance(data, dict) or data.get("kind") != self.kind
                or data.get("image_root") != self.real_root
                or not isinstance(data.get("files"), dict)):
            return {}
        return data["files"]

    def verdict(self, file_name: str, width: int, height: int, check: Check) -> List:
        """`check(path, width, height)` as a list, from the cache when the file is unchanged."""
        path = os.path.join(self.image_root, file_name)
        try:
            st = os.stat(path)
        except OSError:  # missing or unreadable: nothing to key on; check says what it is
            return list(check(path, width, height))
        stamp = [st.st_size, st.st_mtime_ns, width, height]
        entry = self.entries.get(file_name)
        if isinstance(entry, list) and entry[:4] == stamp and len(entry) == 4 + self.fields:
            with self._lock:
                self.hits += 1
            return entry[4:]
        verdict = list(check(path, width, height))
        with self._lock:
            self.misses += 1
            self._new[file_name] = stamp + verdict
        return verdict

    def save(self) -> None:
        """Write the new verdicts (atomically); a cache folder that cannot be written is a
        warning, not an error: the next run checks those images again."""
        if self.path is None or not self._new:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            files = {**self.entries, **self._load(), **self._new}
            write_json(self.path, {"kind": self.kind, "image_root": self.real_root,
                                   "files": files}, separators=(",", ":"))
        except OSError as e:
            logger.warning("cannot write the image-check cache %s (%s); the next run checks "
                           "these %d images again", self.path, e.strerror or e, len(self._new))
            return
        self.entries, self._new = files, {}
