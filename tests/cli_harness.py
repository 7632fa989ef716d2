"""Shared test helpers: the tiny training run's opts, a wrapper that SIGKILLs a process inside
its checkpoint save, and a harness that runs a gn_det CLI as its `__main__` does (in this
process, or as a real process) and judges how it ended: one `<prog>: error:` line and a non-zero
exit for bad input, or exit 0 with the expected warning."""
import contextlib
import dataclasses
import io
import json
import logging
import os
import runpy
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIG = str(REPO / "configs/toy/Base-RetinaNet-R18-Shapes.yaml")
# The real datasets (raccoon, bccd: VOC XML + JPEG), read-only, beside the repository (also in CI);
# GN_DET_SHARED_DATA points elsewhere (a git worktree of the repository that has none beside it).
SHARED_DATA = Path(os.environ.get("GN_DET_SHARED_DATA", "") or REPO.parent / "shared" / "data")
REAL_PHOTO = SHARED_DATA / "raccoon" / "images" / "raccoon-1.jpg"
# name -> (how to run it, script path or module, the prog name in its error lines)
CLIS = {
    "data": ("module", "gn_det.commands.check_data", "check_data"),
    "evaluate": ("path", "tools/evaluate.py", "evaluate.py"),
    "show_errors": ("path", "tools/show_errors.py", "show_errors"),
    "visualize_data": ("path", "tools/visualize_data.py", "visualize_data"),
    "train_net": ("path", "tools/train_net.py", "train_net"),
    "lazy_train_net": ("path", "tools/lazy_train_net.py", "lazy_train_net"),
    "convert_weights": ("path", "tools/convert_weights.py", "convert_weights"),
    "voc_to_coco": ("path", "datasets/voc_to_coco.py", "voc_to_coco"),
    "make_shapes": ("path", "datasets/make_shapes.py", "make_shapes"),
    "pretrain": ("module", "gn_det.commands.pretrain", "pretrain"),
    "export_model": ("path", "tools/export_model.py", "export_model"),
}
# Kills the process inside its KILL_AT_SAVE-th checkpoint write, then runs the script in argv[1].
KILLING_WRAPPER = textwrap.dedent("""
    import os, runpy, signal, sys, torch
    kill_at, real_save, saves = int(os.environ["KILL_AT_SAVE"]), torch.save, []

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "model" in obj:
            saves.append(1)
            if len(saves) == kill_at:
                f.write(b"PK partial")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


# The toy R-18 RetinaNet shrunk to a seconds-long CPU model: 64 px, 32-channel FPN, one head conv.
TINY_MODEL_OPTS = ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
                   "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
                   "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1",
                   "MODEL.NORMS.GN.NUM_GROUPS", "8", "DATALOADER.NUM_WORKERS", "0"]


def shared_data(path: Path = SHARED_DATA) -> Path:
    """`path` under the shared real datasets, or skip the test (with why) when they are absent."""
    import pytest

    if not path.exists():
        pytest.skip(f"{path} is absent: the real datasets are expected in {SHARED_DATA}, beside "
                    "the repository, or where GN_DET_SHARED_DATA points")
    return path


def cut_jpeg(path: Path, fraction: float = 2 / 3) -> Path:
    """A real photo cut to `fraction` of its length, at `path`: PIL fails it at load()."""
    data = shared_data(REAL_PHOTO).read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def jpeg_without_eoi(path: Path) -> Path:
    """A real photo whose end marker FF D9 is replaced by NUL padding: it still decodes."""
    data = shared_data(REAL_PHOTO).read_bytes()
    assert data.endswith(b"\xff\xd9")
    path.write_bytes(data[:-2] + b"\0" * 16)
    return path


def tiny_dataset_opts(shapes: Path, name: str = "tiny") -> List[str]:
    """opts registering a tiny shapes dataset (datasets/make_shapes.py --size 64) as NAME_train /
    NAME_val and training / testing on it."""
    return ["DATASETS.COCO_FORMAT",
            str([[f"{name}_train", f"{shapes}/annotations/train.json", f"{shapes}/train"],
                 [f"{name}_val", f"{shapes}/annotations/val.json", f"{shapes}/val"]]),
            "DATASETS.TRAIN", f"('{name}_train',)", "DATASETS.TEST", f"('{name}_val',)"]


def tiny_train_opts(shapes: Path, out: Path, name: str = "tiny") -> List[str]:
    """opts turning the toy R-18 RetinaNet config into a seconds-long GN run on a tiny shapes
    dataset: 4 iterations of 2 images, a checkpoint every 2."""
    return [*tiny_dataset_opts(shapes, name), *TINY_MODEL_OPTS,
            "MODEL.NORMS.BACKBONE.TYPE", "GN", "MODEL.NORMS.FPN.TYPE", "GN",
            "MODEL.NORMS.RETINANET_HEAD.TYPE", "GN",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
            "OUTPUT_DIR", str(out)]


def coco_scene(anns, dets, num_images: int = 3, num_classes: int = 3) -> Tuple[dict, list]:
    """(COCO ground truth, results list) from tuples: anns (image_id, category_id, XYWH box
    [, iscrowd]), dets (image_id, category_id, XYWH box, score); images 1..num_images of 200x200,
    categories 1..num_classes named c1, c2, ..."""
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 200, "width": 200}
              for i in range(1, num_images + 1)]
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, num_classes + 1)]
    annotations = [dict(id=i + 1, image_id=a[0], category_id=a[1], bbox=list(a[2]),
                        area=a[2][2] * a[2][3], iscrowd=a[3] if len(a) > 3 else 0)
                   for i, a in enumerate(anns)]
    results = [{"image_id": d[0], "category_id": d[1], "bbox": list(d[2]), "score": d[3]}
               for d in dets]
    return {"images": images, "annotations": annotations, "categories": cats}, results


# A coco_scene with one error case per image, counted by hand at IoU 0.5, score >= 0.5 (classes
# c1, c2, c3): the confusion-matrix and error-kind tests (test_confusion.py, test_errors.py).
HAND_ANNS = [
    (1, 1, (10, 10, 40, 40)),           # found by its class: TP
    (1, 2, (100, 100, 40, 40)),         # a c1 detection on it: wrong class ([c2, c1])
    (1, 3, (10, 150, 30, 30)),          # nothing on it: missed ([c3, bg])
    (2, 1, (0, 0, 100, 100), 1),        # crowd region
    (4, 1, (50, 50, 40, 40)),           # found, plus a c2 detection and a c1 duplicate on it
    (5, 2, (0, 0, 40, 40)),             # two c1 detections compete for the leftover c2 / c3
    (5, 3, (30, 0, 40, 40)),
]
HAND_DETS = [
    (1, 1, (10, 10, 40, 40), 0.9),      # TP c1
    (1, 1, (100, 100, 40, 40), 0.8),    # FP c1 on the c2 GT: [c2, c1]
    (1, 3, (150, 10, 30, 30), 0.7),     # FP c3 on nothing: [bg, c3]
    (1, 1, (10, 10, 40, 40), 0.3),      # below the score threshold: not counted
    (2, 1, (10, 10, 30, 30), 0.9),      # absorbed by the c1 crowd: neither TP nor FP
    (2, 2, (20, 20, 30, 30), 0.8),      # c2 inside a c1 crowd: FP c2, background ([bg, c2])
    (3, 2, (0, 0, 20, 20), 0.6),        # image 3 has no annotations: [bg, c2]
    (4, 1, (50, 50, 40, 40), 0.9),      # TP c1
    (4, 2, (50, 50, 40, 40), 0.8),      # FP c2 on a GT already found: no FN to pair: [bg, c2]
    (4, 1, (52, 50, 40, 40), 0.7),      # FP c1, duplicate: [bg, c1]
    (5, 1, (5, 0, 40, 40), 0.9),        # IoU .78 with the c2 GT, .23 with c3: [c2, c1]
    (5, 1, (0, 0, 40, 40), 0.8),        # the c2 GT is taken, IoU .14 with c3: [bg, c1]
]


@dataclasses.dataclass
class Case:
    group: str
    name: str
    expect: str   # "error", "warning" or "ok"
    words: object  # expected in the error / warning line: a string, or a tuple of them
    build: Callable[["Inputs", Path], Tuple[str, List[str]]]  # -> (cli, argv)
    check: Optional[Callable[[Path], Optional[str]]] = None   # after the run: a problem or None
    subprocess_only: bool = False


@dataclasses.dataclass
class Outcome:
    case: Case
    code: object          # exit status, or the name of an exception that escaped
    line: str             # the error / warning line (or the last output line)
    problem: str          # "" when the case ended as expected
    seconds: float


class Inputs:
    """Valid inputs the cases start from (a tiny shapes dataset, a checkpoint of the tiny toy
    model), made once, lazily."""

    def __init__(self, root: Path):
        self.root = root
        self._shapes: Optional[Path] = None
        self._checkpoint: Optional[Path] = None

    @property
    def shapes(self) -> Path:
        if self._shapes is None:
            out = self.root / "shapes"
            code, _, err = run_cli("make_shapes", ["--out", str(out), "--train", "4", "--val",
                                                   "2", "--size", "64", "--quiet"])
            if code != 0:
                raise RuntimeError(f"could not make the tiny dataset: {err}")
            self._shapes = out
        return self._shapes

    def coco(self) -> dict:
        return json.loads((self.shapes / "annotations/val.json").read_text())

    def train_opts(self, out: Path) -> List[str]:
        return tiny_train_opts(self.shapes, out, "bad")

    def train_net(self, out: Path, *extra: str) -> List[str]:
        return ["--config-file", TOY_CONFIG, *self.train_opts(out), *extra]

    @property
    def checkpoint(self) -> Path:
        """The untrained tiny toy model, saved as training saves it (model_0000001.pth)."""
        if self._checkpoint is None:
            import gn_det  # noqa: F401
            from gn_det.config import load_cfg
            from gn_det.data import register_datasets_from_cfg
            from gn_det.engine import Trainer
            from gn_det.checkpoint import AtomicCheckpointer

            out = self.root / "checkpoint"
            cfg = load_cfg(TOY_CONFIG, self.train_opts(out))
            register_datasets_from_cfg(cfg)
            os.makedirs(out, exist_ok=True)
            AtomicCheckpointer(Trainer.build_model(cfg), str(out)).save("model_0000001",
                                                                       iteration=1)
            self._checkpoint = out / "model_0000001.pth"
        return self._checkpoint


def write(path: Path, content) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@contextlib.contextmanager
def logger_state_restored(name: str = "gn_det") -> Iterator[logging.Logger]:
    """Undo a CLI's logging setup (own handlers, no propagation) when running it in-process, so
    later records still reach the root handlers."""
    logger = logging.getLogger(name)
    saved = logger.handlers[:], logger.propagate, logger.level
    try:
        yield logger
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved


class _CurrentStderr(logging.StreamHandler):
    """A log handler writing to whatever sys.stderr is when a record comes (captured or not)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


@contextlib.contextmanager
def root_logs_to_stderr():
    """Records that reach the root logger go to the current sys.stderr, as a fresh process's
    console shows them, while a CLI runs in-process."""
    handler = _CurrentStderr()
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)


def run_cli(cli: str, argv: List[str], in_process: bool = True) -> Tuple[object, str, str]:
    """Run one CLI as its __main__ does: (exit status or escaped exception name, stdout,
    stderr)."""
    kind, target, _ = CLIS[cli]
    if not in_process:
        cmd = [sys.executable, *(["-m", target] if kind == "module" else [str(REPO / target)])]
        env = {k: v for k, v in os.environ.items() if k != "GN_DET_DEBUG"}
        r = subprocess.run(cmd + argv, capture_output=True, text=True, cwd=REPO, env=env)
        return r.returncode, r.stdout, r.stderr
    out, err = io.StringIO(), io.StringIO()
    saved_argv, code = sys.argv, 0
    sys.argv = [target, *argv]
    try:  # as in a fresh process: the CLI's gn_det logger setup is undone afterwards
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                logger_state_restored("gn_det"):
            if kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(REPO / target), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001  escaped: the user would see a traceback
        code = type(e).__name__
        err.write(f"Traceback (most recent call last): {type(e).__name__}: {e}\n")
    finally:
        sys.argv = saved_argv
    return code, out.getvalue(), err.getvalue()


def _has(line: str, words) -> bool:
    return all(w in line for w in (words if isinstance(words, tuple) else (words,)))


def judge(case: Case, prog: str, code, out: str, err: str) -> Tuple[str, str]:
    """(the line shown, the problem or "")."""
    text = out + err
    lines = [line for line in err.splitlines() if line.strip()]
    if case.expect == "error":
        errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
        line = errors[-1] if errors else (lines[-1] if lines else "")
        if not isinstance(code, int) or code == 0:
            return line, f"ended with {code}, expected a non-zero exit"
        if "Traceback (most recent call last)" in text:
            return line, "a traceback was shown"
        if len(errors) != 1:
            return line, f"{len(errors)} '{prog}: error:' lines, expected 1"
        return line, "" if _has(line, case.words) else f"{case.words!r} not in the error line"
    if code != 0:
        return (lines[-1] if lines else ""), f"ended with {code}, expected exit 0"
    hits = [line for line in text.splitlines() if _has(line, case.words)] if case.words else []
    if case.expect == "warning":
        return (hits[0] if hits else ""), "" if hits else f"no warning with {case.words!r}"
    if case.words and not hits:
        return "", f"{case.words!r} not in the output"
    shown = hits or [line for line in out.splitlines() if line.strip()]
    return (shown[-1] if shown else "OK"), ""


def run_case(case: Case, inputs: Inputs, tmp: Path, in_process: bool) -> Outcome:
    start = time.perf_counter()
    cli, argv = case.build(inputs, tmp)
    code, out, err = run_cli(cli, argv, in_process and not case.subprocess_only)
    line, problem = judge(case, CLIS[cli][2], code, out, err)
    if not problem and case.check is not None:
        problem = case.check(tmp) or ""
    return Outcome(case, code, line, problem, time.perf_counter() - start)


