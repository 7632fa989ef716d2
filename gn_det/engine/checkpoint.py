"""DetectionCheckpointer whose saves are atomic: a kill during a save leaves the previous
checkpoint and the `last_checkpoint` pointer intact (temp file + fsync + rename)."""
import glob
import os
import tempfile

import torch

from detectron2.checkpoint import DetectionCheckpointer


def atomic_write(path: str, write) -> None:
    """Write `path` through `write(file)` into a temp file in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class AtomicCheckpointer(DetectionCheckpointer):
    """Saves like detectron2's checkpointer (same file names and contents), atomically."""

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        if self.save_to_disk and save_dir and os.path.isdir(save_dir):
            for stale in glob.glob(os.path.join(save_dir, ".*.tmp")):  # from a killed save
                os.unlink(stale)

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not os.path.isdir(self.save_dir):  # remote path managers: no rename to rely on
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))
