#!/usr/bin/env python
"""Run every bad input of the reliability issue through the real command-line tools and report
how each ended: the exit status and the one line the user sees.

    python tools/check_bad_inputs.py                  # all but the slow training faults
    python tools/check_bad_inputs.py --all            # also NaN loss, SIGKILL in a save, 2 ranks
    python tools/check_bad_inputs.py --group results configs -k nan --full

Each case writes its bad input into a temp folder and runs one CLI (python -m gn_det.data,
tools/evaluate.py, tools/train_net.py, tools/convert_weights.py, datasets/voc_to_coco.py,
datasets/make_shapes.py) as its `__main__` does, in this process (fast; --subprocess runs each
as a real process). A case passes when it ends as expected: "error" = non-zero exit, no
traceback, one `<prog>: error:` line containing the expected words; "warning" = exit 0 with a
warning line containing them (boxes clipped or dropped, an empty results file); "ok" = exit 0.
Exit status: 0 when every case passed, 1 otherwise.
"""
import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TOY_CONFIG = str(REPO / "configs/toy/Base-RetinaNet-R18-Shapes.yaml")
GROUPS = ("datasets", "images", "results", "configs", "weights", "security", "training")
SLOW_GROUPS = ("training",)
# name -> (how to run it, script path or module, the prog name in its error lines)
CLIS = {
    "data": ("module", "gn_det.data", "python -m gn_det.data"),
    "evaluate": ("path", "tools/evaluate.py", "evaluate.py"),
    "train_net": ("path", "tools/train_net.py", "train_net"),
    "convert_weights": ("path", "tools/convert_weights.py", "convert_weights"),
    "voc_to_coco": ("path", "datasets/voc_to_coco.py", "voc_to_coco"),
    "make_shapes": ("path", "datasets/make_shapes.py", "make_shapes"),
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


def tiny_train_opts(shapes: Path, out: Path, name: str = "tiny") -> List[str]:
    """opts turning the toy R-18 RetinaNet config into a seconds-long CPU run on a tiny shapes
    dataset (datasets/make_shapes.py --size 64), registered as NAME_train / NAME_val."""
    return ["DATASETS.COCO_FORMAT",
            str([[f"{name}_train", f"{shapes}/annotations/train.json", f"{shapes}/train"],
                 [f"{name}_val", f"{shapes}/annotations/val.json", f"{shapes}/val"]]),
            "DATASETS.TRAIN", f"('{name}_train',)", "DATASETS.TEST", f"('{name}_val',)",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
            "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
            "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1",
            "MODEL.NORMS.BACKBONE.TYPE", "GN", "MODEL.NORMS.FPN.TYPE", "GN",
            "MODEL.NORMS.RETINANET_HEAD.TYPE", "GN", "MODEL.NORMS.GN.NUM_GROUPS", "8",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
            "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)]


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


# ------------------------------------------------------------------------------ shared inputs

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
            from gn_det.engine import Trainer, setup_cfg
            from gn_det.engine.checkpoint import AtomicCheckpointer

            out = self.root / "checkpoint"
            cfg = setup_cfg(TOY_CONFIG, self.train_opts(out))
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


# ------------------------------------------------------------------------------ the cases

def dataset_case(name, mutate, expect="error", words=""):
    """`python -m gn_det.data` on the tiny val json changed by `mutate(dict)` (or raw text)."""
    def build(inputs, tmp):
        data = inputs.coco()
        content = mutate(data)
        return "data", [write(tmp / "ann.json", data if content is None else content)]
    return Case("datasets", name, expect, words, build)


def ann(**fields):
    def mutate(data):
        data["annotations"][0].update(fields)
    return mutate


def dataset_cases() -> List[Case]:
    def dup(key):
        def mutate(data):
            data[key].append(dict(data[key][0]))
        return mutate
    return [
        dataset_case("not JSON", lambda d: "this is not json", words="not valid JSON"),
        dataset_case("truncated JSON", lambda d: json.dumps(d)[:-40], words="truncated"),
        dataset_case("top level is a list", lambda d: json.dumps([d]),
                     words="top level: is a JSON array"),
        dataset_case("missing images", lambda d: d.pop("images") and None,
                     words="images: is missing"),
        dataset_case("missing annotations", lambda d: d.pop("annotations") and None,
                     words="annotations: is missing"),
        dataset_case("missing categories", lambda d: d.pop("categories") and None,
                     words="categories: is missing"),
        dataset_case("image id is a string", lambda d: d["images"][0].update(id="1"),
                     words="images[0].id: is '1'; expected an integer id"),
        dataset_case("bbox is a string", ann(bbox="1,2,3,4"), words="annotations[0].bbox"),
        dataset_case("duplicate image id", dup("images"), words="duplicates images[0].id"),
        dataset_case("duplicate annotation id", dup("annotations"),
                     words="duplicates annotations[0].id"),
        dataset_case("duplicate category id", dup("categories"),
                     words="duplicates categories[0].id"),
        dataset_case("annotation of an unknown image", ann(image_id=999),
                     words="annotations[0].image_id: 999 is not an id in 'images'"),
        dataset_case("annotation of an unknown category", ann(category_id=99),
                     words="annotations[0].category_id: 99 is not an id in 'categories'"),
        dataset_case("bbox with NaN", lambda d: json.dumps(d).replace(
            json.dumps(d["annotations"][0]["bbox"]), "[NaN, 1, 5, 5]", 1),
            "warning", "dropped 1 annotations with a NaN/inf bbox"),
        dataset_case("bbox with inf", ann(bbox=[1, 1, 1e999, 5]), "warning",
                     "NaN/inf bbox (annotations[0].bbox)"),
        dataset_case("bbox of negative size", ann(bbox=[5, 5, -3, 4]), "warning",
                     "zero or negative bbox width/height (annotations[0].bbox)"),
        dataset_case("bbox of zero size", ann(bbox=[5, 5, 0, 4]), "warning",
                     "zero or negative bbox width/height (annotations[0].bbox)"),
        dataset_case("bbox partly outside the image", ann(bbox=[50, 50, 40, 40]), "warning",
                     "clipped 1 bboxes to their image"),
        dataset_case("bbox entirely outside the image", ann(bbox=[500, 500, 10, 10]), "warning",
                     "dropped 1 annotations whose bbox lies entirely outside its image"),
    ]


def image_case(name, make, expect="error", words=""):
    """`python -m gn_det.data ann.json root` with the first image replaced by `make(path, w, h)`
    (which may write nothing: a missing file)."""
    def build(inputs, tmp):
        data = inputs.coco()
        root = tmp / "images"
        shutil.copytree(inputs.shapes / "val", root)
        first = data["images"][0]
        path = root / first["file_name"]
        path.unlink()
        make(path, first["width"], first["height"])
        return "data", [write(tmp / "ann.json", data), str(root)]
    return Case("images", name, expect, words, build)


def pil_image(mode, size_delta=0):
    def make(path, w, h):
        from PIL import Image

        Image.new(mode, (w + size_delta, h)).save(path, format="PNG")
    return make


def image_cases() -> List[Case]:
    return [
        image_case("image file missing", lambda p, w, h: None, words="is missing"),
        image_case("zero-byte image", lambda p, w, h: p.write_bytes(b""),
                   words="is an empty (zero-byte) file"),
        image_case("unreadable image", lambda p, w, h: p.write_bytes(b"\x89PNG garbage"),
                   words="is not an image PIL can read"),
        image_case("16-bit image", pil_image("I;16"), words="is 16-bit (PIL mode I;16)"),
        image_case("image size differs from the JSON", pil_image("RGB", 7),
                   words="but the JSON says width="),
        image_case("grayscale image (converted by detectron2)", pil_image("L"), "ok"),
        image_case("RGBA image (converted by detectron2)", pil_image("RGBA"), "ok"),
    ]


def results_case(name, mutate, expect="error", words=""):
    """tools/evaluate.py on the tiny val ground truth and a results list from `mutate`."""
    def build(inputs, tmp):
        gt = inputs.coco()
        a = gt["annotations"][0]
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                 "score": 0.9}, {"image_id": a["image_id"], "category_id": a["category_id"],
                                 "bbox": [0, 0, 8, 8], "score": 0.4}]
        content = mutate(dets)
        dt = write(tmp / "results.json", dets if content is None else content)
        return "evaluate", ["--gt", write(tmp / "gt.json", gt), "--dt", dt, "--out",
                            str(tmp / "eval"), "--no-plot"]
    return Case("results", name, expect, words, build)


def det(**fields):
    def mutate(dets):
        dets[1].update(fields)
    return mutate


def results_cases() -> List[Case]:
    def nan_json(dets):
        return json.dumps(dets).replace('"score": 0.4', '"score": NaN')
    return [
        results_case("unknown image id", det(image_id=999),
                     words="entry 1: 'image_id': is 999, not an image of the ground truth"),
        results_case("unknown category", det(category_id=77),
                     words="entry 1: 'category_id': is 77, not a category"),
        results_case("missing score", lambda d: d[1].pop("score") and None,
                     words="entry 1: 'score': is missing"),
        results_case("NaN score", nan_json, words="entry 1: 'score': is nan"),
        results_case("inf score", det(score=1e999), words="entry 1: 'score': is inf"),
        results_case("negative score", det(score=-0.2),
                     words="entry 1: 'score': is -0.2; expected a finite number >= 0"),
        results_case("NaN box", lambda d: json.dumps(d).replace("[0, 0, 8, 8]", "[0, NaN, 8, 8]"),
                     words="entry 1: 'bbox': is [0, nan, 8, 8]; expected 4 finite numbers"),
        results_case("inf box", det(bbox=[0, 0, 1e999, 8]), words="'bbox': is [0, 0, inf, 8]"),
        results_case("negative box size", det(bbox=[0, 0, -8, 8]),
                     words="width and height must be >= 0"),
        results_case("box of 3 numbers", det(bbox=[0, 0, 8]), words="expected 4 finite numbers"),
        results_case("not a list (an object)", lambda d: {"detections": d},
                     words="top level is an object with keys 'detections'; expected a JSON list"),
        results_case("not a list (a number)", lambda d: "3", words="top level is a int"),
        results_case("not JSON", lambda d: "[{", words="not valid JSON"),
        results_case("empty list (valid: zeros)", lambda d: "[]", "warning",
                     "no detections; every metric will be 0"),
        Case("results", "results file missing", "error", "no such results file",
             lambda inputs, tmp: ("evaluate", [
                 "--gt", write(tmp / "gt.json", inputs.coco()), "--dt", str(tmp / "nope.json"),
                 "--out", str(tmp / "eval")])),
        Case("results", "ground truth missing", "error", "no such annotation file",
             lambda inputs, tmp: ("evaluate", ["--gt", str(tmp / "nope.json"), "--dt",
                                               write(tmp / "r.json", "[]"), "--out",
                                               str(tmp / "eval")])),
    ]


def config_case(name, opts=(), yaml=None, expect="error", words="", extra=(), check=None,
                config_file=None):
    """tools/train_net.py with `opts` after the tiny-run opts and `yaml` (text; @BASE@ stands for
    the toy config) or `config_file` as the config file; TMP in either stands for the case's
    temp folder."""
    def build(inputs, tmp):
        argv = inputs.train_net(tmp / "out", *[o.replace("TMP", str(tmp)) for o in opts])
        if yaml is not None:
            argv[1] = write(tmp / "config.yaml",
                            yaml.replace("@BASE@", TOY_CONFIG).replace("TMP", str(tmp)))
        elif config_file is not None:
            argv[1] = config_file
        return "train_net", [*extra, *argv]
    return Case("configs", name, expect, words, build, check)


def no_file(name):
    def check(tmp):
        return f"{name} was created: code ran" if (tmp / name).exists() else None
    return check


def config_cases() -> List[Case]:
    return [
        config_case("unknown norm type", ["MODEL.NORMS.FPN.TYPE", "GroupNorm"],
                    words="MODEL.NORMS.FPN.TYPE: unknown norm type 'GroupNorm'"),
        config_case("both group modes set", ["MODEL.NORMS.GN.CHANNELS_PER_GROUP", "16"],
                    words="MODEL.NORMS.GN: "),
        config_case("channels not divisible by groups", ["MODEL.NORMS.GN.NUM_GROUPS", "6"],
                    words="divisible"),
        config_case("WS on a component without norm (allowed)",
                    ["MODEL.NORMS.RETINANET_HEAD.TYPE", "none", "MODEL.NORMS.RETINANET_HEAD.WS",
                     "True"], expect="warning", words="MODEL.NORMS.RETINANET_HEAD.WS is on but",
                    extra=["--eval-only"]),
        config_case("unknown key in the YAML", yaml="_BASE_: @BASE@\nMODEL:\n  NORMZ: {}\n",
                    words="Non-existent config key: MODEL.NORMZ"),
        config_case("unknown key on the command line", ["SOLVER.NOPE", "1"],
                    words="Non-existent key: SOLVER.NOPE"),
        config_case("YAML with a python tag (refused, not run)",
                    yaml="_BASE_: @BASE@\nMODEL:\n  DEVICE: !!python/object/apply:os.system "
                         "['touch TMP/pwned']\n",
                    words="python tags are refused", check=no_file("pwned")),
        config_case("YAML syntax error", yaml="MODEL: [unclosed\n", words="not valid safe YAML"),
        config_case("config file missing", config_file="/nonexistent/config.yaml",
                    words="config file '/nonexistent/config.yaml' does not exist"),
        config_case("_BASE_ file missing", yaml="_BASE_: nowhere.yaml\n", words="nowhere.yaml"),
        config_case("value that is Python code (not evaluated)",
                    ["SOLVER.BASE_LR", "__import__('os').system('touch TMP/pwned')"],
                    words="SOLVER.BASE_LR", check=no_file("pwned")),
        config_case("dataset not registered", ["DATASETS.TRAIN", "('nope',)"],
                    words="DATASETS.TRAIN[0]: dataset 'nope' is not registered"),
        config_case("dataset json missing", ["DATASETS.COCO_FORMAT",
                                             "[['x', '/nonexistent/a.json', '/tmp']]"],
                    words="/nonexistent/a.json: annotation file not found"),
    ]


def weights_case(name, make, words, extra=(), expect="error", check=None):
    """tools/train_net.py --eval-only with MODEL.WEIGHTS = what `make(inputs, tmp)` returns."""
    def build(inputs, tmp):
        return "train_net", ["--eval-only", *extra,
                             *inputs.train_net(tmp / "out", "MODEL.WEIGHTS", make(inputs, tmp))]
    return Case("weights", name, expect, words, build, check)


def torch_file(obj_fn, name="w.pth"):
    def make(inputs, tmp):
        import torch

        torch.save(obj_fn(inputs, tmp), tmp / name)
        return str(tmp / name)
    return make


class RunsCode:
    """Unpickling this creates a file: what a malicious checkpoint does."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def resume_case(name, opts, words, keep_file=True):
    """--resume in an OUTPUT_DIR whose last_checkpoint names the tiny model's checkpoint (there,
    or deleted), with other `opts`."""
    def build(inputs, tmp):
        out = tmp / "out"
        out.mkdir()
        if keep_file:
            shutil.copy(inputs.checkpoint, out / "model_0000001.pth")
        (out / "last_checkpoint").write_text("model_0000001.pth")
        return "train_net", ["--resume", *inputs.train_net(out, *opts)]
    return Case("weights", name, "error", words, build)


def weights_cases() -> List[Case]:
    def state(inputs, tmp):
        import torch

        return torch.load(inputs.checkpoint, weights_only=True)["model"]

    def resnet18(inputs, tmp):
        import torchvision

        return torchvision.models.resnet18(weights=None).state_dict()

    def shrunk(inputs, tmp):
        sd = state(inputs, tmp)
        key = "head.cls_score.weight"
        sd[key] = sd[key][:9]
        return {"model": sd}

    def raw(content):
        return lambda inputs, tmp: write(tmp / "w.pth", content)
    return [
        weights_case("weights file missing", lambda i, t: str(t / "nope.pth"), "no such file"),
        weights_case("truncated checkpoint", lambda i, t: write(
            t / "w.pth", i.checkpoint.read_bytes()[:4096]), "not a readable torch checkpoint"),
        weights_case("corrupt checkpoint (garbage)", raw(b"\x00garbage\xff" * 10),
                     "not a readable torch checkpoint"),
        weights_case("empty checkpoint file", raw(b""), "not a readable torch checkpoint"),
        weights_case("state dict of another architecture (torchvision ResNet-18)",
                     torch_file(resnet18), "none of its 122 tensors fits the model"),
        weights_case("shape mismatch", torch_file(shrunk),
                     "head.cls_score.weight is (9, 32, 3, 3) in the file but (36, 32, 3, 3)"),
        weights_case("not a state dict (a list)", torch_file(lambda i, t: [1, 2]),
                     "holds a list; expected a state dict"),
        weights_case("checkpoint holding code (refused, not run)",
                     torch_file(lambda i, t: {"model": {}, "x": RunsCode(str(t / "pwned"))}),
                     "holds Python objects of type io.open besides tensors",
                     check=no_file("pwned")),
        weights_case(".pkl from a URL (refused before download)",
                     lambda i, t: "https://example.com/R-50.pkl",
                     "a pickle (.pkl) is loaded only from a local path or detectron2's model zoo"),
        resume_case("resume with a config of another model shape",
                    ["MODEL.FPN.OUT_CHANNELS", "16"],
                    "was saved from a model of another shape than this config builds"),
        resume_case("resume: last_checkpoint names a missing file", [],
                    "model_0000001.pth: no such file, but", keep_file=False),
        Case("weights", "convert_weights: corrupt input", "error", "not a readable torch",
             lambda inputs, tmp: ("convert_weights", [write(tmp / "in.pth", b"junk"),
                                                      str(tmp / "out.pth")])),
        Case("weights", "convert_weights: not a ResNet", "error",
             "not a torchvision-naming ResNet",
             lambda inputs, tmp: ("convert_weights", [
                 torch_file(lambda i, t: {"fc.weight": __import__("torch").zeros(2, 2)})(
                     inputs, tmp), str(tmp / "out.pth")])),
    ]


VOC_XML = ("<annotation><filename>{name}</filename><size><width>60</width><height>40</height>"
           "<depth>3</depth></size><object><name>cat</name><bndbox><xmin>11</xmin><ymin>6</ymin>"
           "<xmax>30</xmax><ymax>25</ymax></bndbox></object></annotation>")


def voc_case(name, xml, words):
    def build(inputs, tmp):
        write(tmp / "xmls/a_1.xml", xml)
        return "voc_to_coco", ["--xml-dir", str(tmp / "xmls"), "--out", str(tmp / "out.json")]
    return Case("security", name, "error", words, build,
                check=lambda tmp: "wrote output" if (tmp / "out.json").exists() else None)


def security_cases() -> List[Case]:
    return [
        voc_case("VOC filename with ../ (path traversal)", VOC_XML.format(name="../../etc/passwd"),
                 "points outside the image folder"),
        voc_case("VOC absolute filename", VOC_XML.format(name="/etc/passwd"),
                 "points outside the image folder"),
        voc_case("VOC XML with an entity declaration", '<?xml version="1.0"?><!DOCTYPE a '
                 '[<!ENTITY x "xx">]>' + VOC_XML.format(name="&x;.jpg"), "entity"),
        voc_case("VOC XML malformed", "<annotation><filename>", "malformed XML at line 1"),
        Case("security", "make_shapes: bad option", "error", "--size 8: expected 32..4096",
             lambda inputs, tmp: ("make_shapes", ["--out", str(tmp / "o"), "--size", "8"])),
    ]


def training_cases() -> List[Case]:
    def nan(inputs, tmp):  # an inf LR from iteration 2 on: NaN loss at iteration 3
        return "train_net", inputs.train_net(tmp / "out", "SOLVER.STEPS", "(2,)",
                                             "SOLVER.GAMMA", "1e999")

    def nan_check(tmp):
        out = tmp / "out"
        if (out / "last_checkpoint").read_text() != "model_0000001.pth":
            return "last_checkpoint moved past the last good checkpoint"
        import torch

        state = torch.load(out / "model_0000001.pth", weights_only=True)["model"]
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            return "the kept checkpoint holds NaN/inf"
        return None

    def killed_then_resume(inputs, tmp):
        argv = inputs.train_net(tmp / "out")
        r = subprocess.run([sys.executable, "-c", KILLING_WRAPPER, str(REPO / CLIS["train_net"][1]),
                            *argv], env=dict(os.environ, KILL_AT_SAVE="2"), capture_output=True)
        if r.returncode != -signal.SIGKILL:
            raise RuntimeError(f"the run was not killed inside its save: {r.returncode}")
        return "train_net", ["--resume", *argv]

    def two_ranks(inputs, tmp):
        return "train_net", ["--num-gpus", "2", *inputs.train_net(
            tmp / "out", "MODEL.WEIGHTS", str(tmp / "nope.pth"))]
    return [
        Case("training", "NaN loss", "error",
             "loss is not finite at iteration 3 (micro-step 0): loss_cls=nan", nan, nan_check),
        Case("training", "SIGKILL inside a checkpoint save, then --resume", "ok",
             "Starting training from iteration 2", killed_then_resume),
        Case("training", "bad weights in a 2-process run", "error",
             ("train_net: error: rank ", ": MODEL.WEIGHTS ", "nope.pth: no such file"), two_ranks,
             subprocess_only=True),
    ]


def all_cases() -> List[Case]:
    return (dataset_cases() + image_cases() + results_cases() + config_cases() + weights_cases()
            + security_cases() + training_cases())


# ------------------------------------------------------------------------------ running

class _CurrentStderr(logging.StreamHandler):
    """A log handler writing to whatever sys.stderr is when a record comes (captured or not)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def run_cli(cli: str, argv: List[str], in_process: bool = True) -> Tuple[object, str, str]:
    """Run one CLI as its __main__ does: (exit status or escaped exception name, stdout,
    stderr)."""
    kind, target, _ = CLIS[cli]
    if not in_process:
        cmd = [sys.executable, *(["-m", target] if kind == "module" else [str(REPO / target)])]
        env = {k: v for k, v in os.environ.items() if k != "GN_DET_DEBUG"}
        r = subprocess.run(cmd + argv, capture_output=True, text=True, cwd=REPO, env=env)
        return r.returncode, r.stdout, r.stderr
    from gn_det.cli import logger_state_restored

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


def ended(o: Outcome) -> str:
    if isinstance(o.code, str):
        return f"raised {o.code}"
    if o.code == 0:
        return "exit 0 (warning)" if o.case.expect == "warning" else "exit 0"
    if o.code < 0:
        return f"killed by signal {-o.code}"
    return f"exit {o.code}"


def format_table(outcomes: List[Outcome], width: Optional[int], tmp_root: str = "") -> str:
    """A markdown table; the temp folder shows as $TMP, the --debug hint is left out."""
    rows = ["| # | group | bad input | ended | message | as expected |",
            "|---|---|---|---|---|---|"]
    for i, o in enumerate(outcomes, 1):
        msg = o.line.replace(" (rerun with --debug for the traceback)", "").replace("|", "\\|")
        msg = msg.replace(tmp_root, "$TMP") if tmp_root else msg
        if width and len(msg) > width:
            msg = msg[:width - 3] + "..."
        verdict = "yes" if not o.problem else f"NO: {o.problem}"
        rows.append(f"| {i} | {o.case.group} | {o.case.name} | {ended(o)} | {msg} | {verdict} |")
    return "\n".join(rows)


def summary(outcomes: List[Outcome]) -> str:
    kinds: Dict[str, int] = {}
    for o in outcomes:
        kinds[ended(o)] = kinds.get(ended(o), 0) + 1
    bad = sum(1 for o in outcomes if o.problem)
    how = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return (f"{len(outcomes)} bad inputs tried: {how}; "
            + ("all ended as expected" if not bad else f"{bad} did NOT end as expected"))


def select(cases: List[Case], groups, include_slow: bool, keywords) -> List[Case]:
    """Cases of `groups` (default: all but the slow ones, unless `include_slow`), or, with
    `keywords`, those matching any of them."""
    if keywords:
        return [c for c in cases if any(k.lower() in f"{c.group}: {c.name}".lower()
                                        for k in keywords)]
    return [c for c in cases if (c.group in groups if groups else
                                 include_slow or c.group not in SLOW_GROUPS)]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", nargs="+", choices=GROUPS, help="only these groups")
    ap.add_argument("--all", action="store_true", help="include the slow training faults")
    ap.add_argument("-k", dest="keywords", action="append",
                    help="only cases whose 'group: name' contains this (repeatable: any)")
    ap.add_argument("--subprocess", action="store_true",
                    help="run each CLI as a real process (slower: imports each time)")
    ap.add_argument("--full", action="store_true", help="do not shorten messages in the table")
    ap.add_argument("--json", help="also write the outcomes to this file")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = select(all_cases(), args.group, args.all, args.keywords)
    if args.list:
        print("\n".join(f"{c.group}: {c.name} (expect {c.expect})" for c in cases))
        return 0
    if not cases:
        print("check_bad_inputs: error: no case matches", file=sys.stderr)
        return 2
    handler = _CurrentStderr()  # warnings that reach the root logger land in the captured output
    logging.getLogger().addHandler(handler)
    saved_env = os.environ.pop("GN_DET_DEBUG", None)
    outcomes: List[Outcome] = []
    start = time.perf_counter()
    tmp_root = ""
    try:
        with tempfile.TemporaryDirectory(prefix="gn_det_bad_inputs_") as tmp_root:
            inputs = Inputs(Path(tmp_root))
            for i, case in enumerate(cases):
                tmp = Path(tmp_root) / f"case{i:03d}"
                tmp.mkdir()
                outcome = run_case(case, inputs, tmp, not args.subprocess)
                outcomes.append(outcome)
                elapsed = time.perf_counter() - start
                eta = elapsed / (i + 1) * (len(cases) - i - 1)
                print(f"[{i + 1}/{len(cases)} {elapsed:.0f}s, ETA {eta:.0f}s] {case.group}: "
                      f"{case.name}: {ended(outcome)}"
                      + (f"  <-- {outcome.problem}" if outcome.problem else ""),
                      file=sys.stderr, flush=True)
    finally:
        logging.getLogger().removeHandler(handler)
        if saved_env is not None:
            os.environ["GN_DET_DEBUG"] = saved_env
    print(format_table(outcomes, None if args.full else 140, tmp_root))
    print()
    print(summary(outcomes))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"group": o.case.group, "case": o.case.name, "expect": o.case.expect,
              "ended": ended(o), "message": o.line.replace(tmp_root, "$TMP"), "problem": o.problem,
              "seconds": round(o.seconds, 2)} for o in outcomes], indent=2))
    return 1 if any(o.problem for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
