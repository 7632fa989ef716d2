"""Every kind of bad input (datasets, images, configs, weights, results files), run through the
real commands (check_data, tools/evaluate.py, tools/show_errors.py, tools/visualize_data.py,
tools/train_net.py, tools/convert_weights.py, tools/export_model.py, datasets/voc_to_coco.py,
datasets/make_shapes.py, pretrain) as their `__main__` runs them: each ends as expected. "error" =
non-zero exit, no traceback, one `<prog>: error:` line containing the expected words; "warning" =
exit 0 with a warning line containing them (boxes clipped or dropped, an empty results file);
"ok" = exit 0.
`pytest tests/tools/test_bad_inputs.py -v` lists them.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from cli_harness import (CLIS, KILLING_WRAPPER, REPO, TOY_CONFIG, Case, Inputs, cut_jpeg,
                         jpeg_without_eoi, root_logs_to_stderr, run_case, tiny_train_opts, write)

pytestmark = pytest.mark.slow  # runs each bad input through the real command, most in a subprocess

# ------------------------------------------------------------------------------ the cases

def dataset_case(name, mutate, expect="error", words=""):
    """`gn-det-check-data` on the tiny val json changed by `mutate(dict)` (or raw text)."""
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
        Case("datasets", "pretrain: train json missing", "error",
             "no.json: annotation file not found", lambda inputs, tmp: (
                 "pretrain", pretrain_args(inputs, tmp, train_json=str(tmp / "no.json")))),
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
            "warning", "dropped 1 annotation with a NaN/inf bbox"),
        dataset_case("bbox with inf", ann(bbox=[1, 1, 1e999, 5]), "warning",
                     "NaN/inf bbox (annotations[0].bbox)"),
        dataset_case("bbox of negative size", ann(bbox=[5, 5, -3, 4]), "warning",
                     "zero or negative bbox width/height (annotations[0].bbox)"),
        dataset_case("bbox of zero size", ann(bbox=[5, 5, 0, 4]), "warning",
                     "zero or negative bbox width/height (annotations[0].bbox)"),
        dataset_case("bbox partly outside the image", ann(bbox=[50, 50, 40, 40]), "warning",
                     "clipped 1 bbox to the image"),
        dataset_case("bbox entirely outside the image", ann(bbox=[500, 500, 10, 10]), "warning",
                     "dropped 1 annotation whose bbox lies entirely outside its image"),
    ]


def image_case(name, make, expect="error", words=""):
    """`gn-det-check-data ann.json root` with the first image replaced by `make(path, w, h)`
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


def with_photo(inputs, tmp, kind: str, split: str = "val") -> Path:
    """A copy of the tiny shapes dataset whose first `split` image is a real photo, cut to two
    thirds ('cut') or with its JPEG end marker stripped ('no_eoi'); its width/height in the JSON
    are the photo's, so that only decoding can fail."""
    from PIL import Image

    shapes = tmp / "shapes"
    shutil.copytree(inputs.shapes, shapes)
    ann_file = shapes / "annotations" / f"{split}.json"
    data = json.loads(ann_file.read_text())
    make = {"cut": cut_jpeg, "no_eoi": jpeg_without_eoi}[kind]
    with Image.open(make(shapes / split / "photo.jpg")) as im:
        w, h = im.size
    data["images"][0].update(file_name="photo.jpg", width=w, height=h)
    ann_file.write_text(json.dumps(data))
    return shapes


def photo_case(name, kind, expect="error", words=""):
    """`gn-det-check-data` on the val split with a real photo, cut or without end marker."""
    def build(inputs, tmp):
        shapes = with_photo(inputs, tmp, kind)
        return "data", [str(shapes / "annotations/val.json"), str(shapes / "val")]
    return Case("images", name, expect, words, build)


def photo_train_case(name, kind, split, prefix, words, opts=(), extra=()):
    """tools/train_net.py on the tiny shapes with a real photo in `split`, under dataset names
    PREFIX_train / PREFIX_val unique to the case (its files differ from the other cases')."""
    def build(inputs, tmp):
        shapes = with_photo(inputs, tmp, kind, split)
        return "train_net", [*extra, "--config-file", TOY_CONFIG,
                             *tiny_train_opts(shapes, tmp / "out", prefix), *opts]
    return Case("images", name, "error", words, build)


def image_cases() -> List[Case]:
    no_check = ["DATASETS.CHECK_IMAGES", "False", "DATALOADER.NUM_WORKERS", "1"]
    return [
        photo_case("cut JPEG (a real photo cut to two thirds)", "cut",
                   words=("images[0] 'photo.jpg' cannot be decoded (OSError: image file is "
                          "truncated (", "the file is damaged")),
        photo_case("JPEG without end marker that decodes", "no_eoi", "warning",
                   ("1 of 2 JPEG files under", "do not end with the JPEG end marker FF D9 but "
                    "decode (first 1: 'photo.jpg')")),
        photo_train_case("train_net: registration refuses a cut JPEG", "cut", "train",
                         "cut_reg", ("(dataset 'cut_reg_train')",
                                     "images[0] 'photo.jpg' cannot be decoded")),
        photo_train_case("train_net with DATASETS.CHECK_IMAGES False: cut JPEG in training",
                         "cut", "train", "cut_train",
                         ("photo.jpg of dataset 'cut_train_train' cannot be read (OSError: image "
                          "file is truncated", "DATASETS.CHECK_IMAGES True finds every such file"),
                         no_check),
        photo_train_case("eval-only with DATASETS.CHECK_IMAGES False: cut JPEG in evaluation",
                         "cut", "val", "cut_eval",
                         ("photo.jpg of dataset 'cut_eval_val' cannot be read (OSError: image "
                          "file is truncated"),
                         no_check, extra=["--eval-only"]),
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


def viewer_case(name, spoil, words, group="images"):
    """tools/show_errors.py on the tiny val set (an FP on every image, so each is drawn) with
    `spoil(image_root, gt)` applied to a copy of its images; returns extra argv or None."""
    def build(inputs, tmp):
        gt = inputs.coco()
        root = tmp / "images"
        shutil.copytree(inputs.shapes / "val", root)
        dets = [{"image_id": img["id"], "category_id": gt["categories"][0]["id"],
                 "bbox": [0, 0, 8, 8], "score": 0.9} for img in gt["images"]]
        argv = spoil(root, gt) or ["--image-root", str(root)]
        return "show_errors", ["--gt", write(tmp / "gt.json", gt), "--dt",
                               write(tmp / "dt.json", dets), "--out", str(tmp / "out"), *argv]
    return Case(group, name, "error", words, build)


def viewer_cases() -> List[Case]:
    def missing(root, gt):
        (root / gt["images"][0]["file_name"]).unlink()

    def truncated(root, gt):
        path = root / gt["images"][0]["file_name"]
        data = path.read_bytes()
        path.write_bytes(data[:len(data) * 2 // 3])

    def garbage(root, gt):
        (root / gt["images"][0]["file_name"]).write_bytes(b"\x89PNG garbage")

    def not_a_folder(root, gt):
        return ["--image-root", str(root / gt["images"][0]["file_name"])]
    return [
        viewer_case("error viewer: image file missing", missing,
                    ("1 of the 2 images to draw are not under", "expected --image-root")),
        viewer_case("error viewer: image cut short", truncated,
                    ("cannot be read", "image file is truncated")),
        viewer_case("error viewer: image not decodable", garbage, "cannot be read"),
        viewer_case("error viewer: image root is a file", not_a_folder,
                    ("--image-root:", "is not a folder"), group="results"),
    ]


def browser_case(name, opts, words):
    """tools/visualize_data.py on the tiny dataset with `opts` (argv before the config opts)."""
    def build(inputs, tmp):
        return "visualize_data", ["--config-file", TOY_CONFIG, "--output", str(tmp / "b"),
                                  *opts, *inputs.train_opts(tmp / "out")]
    return Case("datasets", name, "error", words, build)


def browser_cases() -> List[Case]:
    return [
        browser_case("dataset browser: unknown dataset", ["--dataset", "nope"],
                     ("--dataset 'nope' is not registered", "COCO_FORMAT names: bad_train")),
        browser_case("dataset browser: builtin without its files", ["--dataset",
                                                                     "coco_2017_val"],
                     ("dataset 'coco_2017_val' could not be loaded", "instances_val2017.json")),
        browser_case("dataset browser: negative --num", ["--num", "-1"],
                     "--num -1: expected 0 (all) or more"),
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


def thresholds_file(tmp, classes, **top) -> str:
    """A thresholds.json with `classes` ({name: threshold}) and top-level fields `top`."""
    content = {"format": "gn_det.thresholds", "version": 1, "rule": "best_f1",
               "classes": {n: {"category_id": i + 1, "threshold": t}
                           for i, (n, t) in enumerate(classes.items())}}
    return write(tmp / "thresholds.json", {**content, **top})


def thresholds_case(name, words, classes=None, **top):
    """tools/evaluate.py --thresholds on valid results, the file from `classes` and `top`
    (classes default: the tiny ground truth's first class at 0.5)."""
    def build(inputs, tmp):
        gt = inputs.coco()
        a = gt["annotations"][0]
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                 "score": 0.9}]
        names = classes if classes is not None else {gt["categories"][0]["name"]: 0.5}
        return "evaluate", ["--gt", write(tmp / "gt.json", gt), "--dt",
                            write(tmp / "results.json", dets), "--out", str(tmp / "eval"),
                            "--no-plot", "--thresholds", thresholds_file(tmp, names, **top)]
    return Case("results", name, "error", words, build)


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
        thresholds_case("evaluate --thresholds: a class the ground truth lacks",
                        "thresholds.json: classes['RBC']: the ground truth has no class 'RBC'",
                        classes={"RBC": 0.5}),
        thresholds_case("evaluate --thresholds: not a thresholds file",
                        "thresholds.json: 'format' is 'yolo'; expected 'gn_det.thresholds'",
                        format="yolo"),
        thresholds_case("evaluate --thresholds: a threshold that is not a number",
                        "thresholds.json: classes['c'].threshold: is 'high'; expected a finite "
                        "number", classes={"c": "high"}),
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


LAZY_TOY = str(REPO / "configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py")


def lazy_case(name, overrides=(), words="", source=None):
    """tools/lazy_train_net.py --eval-only on the toy LazyConfig preset (or a config file with
    `source` as its text), with the tiny dataset registered from the config and `overrides`."""
    def build(inputs, tmp):
        config = LAZY_TOY if source is None else write(tmp / "config.py", source)
        entries = [[f"bad_{s}", f"{inputs.shapes}/annotations/{s}.json", f"{inputs.shapes}/{s}"]
                   for s in ("train", "val")]
        return "lazy_train_net", ["--eval-only", "--config-file", config,
                                  f"datasets.coco_format={entries}",
                                  "dataloader.train.dataset.names=[bad_train]",
                                  "dataloader.test.dataset.names=bad_val",
                                  f"train.output_dir={tmp / 'out'}", *overrides]
    return Case("configs", f"LazyConfig: {name}", "error", words, build)


def pretrain_args(inputs, tmp, train_json=None) -> List[str]:
    """gn-det-pretrain on the tiny shapes with the toy BiT config."""
    shapes = inputs.shapes
    return ["--config-file", str(REPO / "configs/toy/retinanet_BiT_toy_shapes.yaml"),
            "--train-json", train_json or str(shapes / "annotations/train.json"),
            "--val-json", str(shapes / "annotations/val.json"), "--image-root",
            str(shapes / "train"), "--val-image-root", str(shapes / "val"), "--out",
            str(tmp / "out"), "--stage", "pretrain"]


def config_cases() -> List[Case]:
    return [
        lazy_case("train.score_thresholds_file missing",
                  ["train.score_thresholds_file=/nonexistent/thresholds.json"],
                  "/nonexistent/thresholds.json"),
        lazy_case("override of an unknown key", ["model.backbone.bottom_up.nrom=GN"],
                  ("model.backbone.bottom_up.nrom is not a key of the config", "norm, ")),
        lazy_case("unknown norm type", ["model.head.norm=GroupNorm"],
                  "model.head.norm: unknown norm type 'GroupNorm'"),
        lazy_case("a number replaced by text", ["train.max_iter=many"],
                  "train.max_iter is a number (400); expected a number"),
        lazy_case("Python syntax error", words="Python syntax error at line",
                  source="model = dict(\n"),
        lazy_case("dataset not registered", ["dataloader.test.dataset.names=nope"],
                  "dataloader.test.dataset.names[0]: dataset 'nope' is not registered"),
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
        Case("configs", "pretrain: --epochs 0", "error", "--epochs 0: expected >= 1",
             lambda inputs, tmp: ("pretrain", [*pretrain_args(inputs, tmp), "--epochs", "0"])),
        Case("datasets", "pretrain: images not under --image-root", "error",
             ("val.json: image 'val_000000.jpg' (id ", "cannot read"),
             lambda inputs, tmp: ("pretrain", [*pretrain_args(inputs, tmp), "--val-image-root",
                                               str(inputs.shapes / "train")])),
        Case("configs", "pretrain: a BN backbone (timm's BiT is GN + WS)", "error",
             "MODEL.NORMS.BACKBONE is BN+WS: the pretraining builds timm's BiT, GN + WS",
             lambda inputs, tmp: ("pretrain", [*pretrain_args(inputs, tmp),
                                               "MODEL.NORMS.BACKBONE.TYPE", "BN"])),
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

    def timm_resnetv2(inputs, tmp):  # timm's names, as resnetv2_*_bit saves them
        import torch

        return {"stem.conv.weight": torch.zeros(8, 3, 7, 7),
                "stages.0.blocks.0.conv1.weight": torch.zeros(8, 8, 1, 1)}

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
        weights_case("timm ResNetV2 (BiT) file for a model without a BiT backbone",
                     torch_file(timm_resnetv2), "holds timm ResNetV2 (BiT) weights, but the model "
                     "has no BiT backbones; load them with MODEL.BACKBONE.NAME build_gn_bit_"),
        weights_case("corrupt .safetensors file", lambda i, t: write(
            t / "w.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"),
            "not a readable safetensors file"),
        Case("weights", "convert_weights: corrupt input", "error", "not a readable torch",
             lambda inputs, tmp: ("convert_weights", [write(tmp / "in.pth", b"junk"),
                                                      str(tmp / "out.pth")])),
        Case("weights", "convert_weights: not a ResNet", "error",
             "not a torchvision-naming ResNet",
             lambda inputs, tmp: ("convert_weights", [
                 torch_file(lambda i, t: {"fc.weight": __import__("torch").zeros(2, 2)})(
                     inputs, tmp), str(tmp / "out.pth")])),
    ]


def sample_png(tmp) -> str:
    from PIL import Image

    Image.new("RGB", (80, 60), (120, 60, 30)).save(tmp / "sample.png")
    return str(tmp / "sample.png")


def export_case(group, name, words, weights=None, opts=(), sample=sample_png, config=None,
                args=(), before=None):
    """tools/export_model.py on the tiny toy checkpoint (or `weights(inputs, tmp)`) with the
    tiny-run opts plus `opts` (TMP stands for the case's temp folder), a sample image from
    `sample(tmp)` (None: no --sample-image), `config` (default the toy config) and more flags
    `args`, after `before(tmp)` (e.g. writing a file); nothing may be written."""
    def build(inputs, tmp):
        if before is not None:
            before(tmp)
        path = weights(inputs, tmp) if weights else str(inputs.checkpoint)
        images = ["--sample-image", sample(tmp)] if sample else []
        return "export_model", ["--config-file", config or TOY_CONFIG, "--output",
                                str(tmp / "export"), *images, *args,
                                *inputs.train_opts(tmp / "out"),
                                *[o.replace("TMP", str(tmp)) for o in opts], "MODEL.WEIGHTS",
                                path]

    def nothing_written(tmp):
        out = tmp / "export"
        return f"wrote {os.listdir(out)}" if out.is_dir() and os.listdir(out) else None
    return Case(group, name, "error", words, build, nothing_written)


def trained_with_ws(inputs, tmp) -> str:
    """The tiny checkpoint in a training folder whose config.yaml says GN+WS."""
    from gn_det.config import load_cfg

    run = tmp / "run"
    run.mkdir()
    shutil.copy(inputs.checkpoint, run / "model_final.pth")
    ws = [x for c in ("BACKBONE", "FPN", "RETINANET_HEAD") for x in (f"MODEL.NORMS.{c}.WS", "True")]
    (run / "config.yaml").write_text(load_cfg(TOY_CONFIG, inputs.train_opts(tmp / "o") + ws,
                                              resolve_device=False).dump())
    return str(run / "model_final.pth")


def export_cases() -> List[Case]:
    return [
        export_case("weights", "export: checkpoint missing", "nope.pth: no such file",
                    weights=lambda i, t: str(t / "nope.pth")),
        export_case("weights", "export: config of another model shape",
                    ("was saved from a model of another shape than this config builds (",
                     "in the file but", "pass the config it was trained with"),
                    opts=["MODEL.FPN.OUT_CHANNELS", "16"]),
        export_case("weights", "export: BN config for a GN checkpoint",
                    ("another shape than this config builds (missing", "running_mean"),
                    opts=["MODEL.NORMS.BACKBONE.TYPE", "BN"]),
        export_case("weights", "export: GN config, checkpoint trained with GN+WS (config.yaml)",
                    ("was trained with", "config.yaml (BACKBONE=GN G=8+WS(timm), FPN=GN "
                     "G=8+WS(timm)", "but this config builds BACKBONE=GN G=8, FPN=GN G=8"),
                    weights=trained_with_ws),
        export_case("configs", "export: MODEL.WEIGHTS empty", "MODEL.WEIGHTS is empty",
                    weights=lambda i, t: ""),
        Case("configs", "export: LazyConfig with train.init_checkpoint empty", "error",
             "train.init_checkpoint is empty: pass the trained checkpoint",
             lambda inputs, tmp: ("export_model", [
                 "--config-file", LAZY_TOY, "--output", str(tmp / "export"),
                 "train.init_checkpoint=''"])),
        Case("configs", "export: LazyConfig given a YAML-style override", "error",
             "model.nrom", lambda inputs, tmp: ("export_model", [
                 "--config-file", LAZY_TOY, "--output", str(tmp / "export"),
                 f"train.init_checkpoint={inputs.checkpoint}", "model.nrom=GN"])),
        export_case("configs", "export: unknown --format", "--format onnxx: valid are",
                    args=["--format", "onnxx"]),
        export_case("images", "export: sample image missing", "nope.png: no such file",
                    sample=lambda tmp: str(tmp / "nope.png")),
        export_case("images", "export: sample image is not an image",
                    "not an image PIL can read", sample=lambda tmp: write(tmp / "x.jpg", b"junk")),
        export_case("configs", "export: MODEL.SCORE_THRESHOLDS_FILE with a class the model "
                    "lacks", "thresholds.json: classes['RBC']: the model has no class 'RBC'",
                    opts=["MODEL.SCORE_THRESHOLDS_FILE", "TMP/thresholds.json"],
                    before=lambda tmp: thresholds_file(tmp, {"RBC": 0.5})),
        export_case("configs", "export: MODEL.SCORE_THRESHOLDS_FILE missing",
                    "nope.json", opts=["MODEL.SCORE_THRESHOLDS_FILE", "TMP/nope.json"]),
        export_case("images", "export: no sample image and no test dataset",
                    "no sample images: pass --sample-image", opts=["DATASETS.TEST", "()"],
                    sample=None),
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
        Case("training", "model's class count differs from the dataset's", "error",
             "has 4 classes but MODEL.RETINANET.NUM_CLASSES is 3; add "
             "`MODEL.RETINANET.NUM_CLASSES 4`",
             lambda inputs, tmp: ("train_net", inputs.train_net(
                 tmp / "out", "MODEL.RETINANET.NUM_CLASSES", "3"))),
        Case("training", "NaN loss", "error",
             "loss is not finite at iteration 3 (micro-step 0): loss_cls=nan", nan, nan_check),
        Case("training", "SIGKILL inside a checkpoint save, then --resume", "ok",
             "Starting training from iteration 2", killed_then_resume),
        Case("training", "bad weights in a 2-process run", "error",
             ("train_net: error: rank ", ": MODEL.WEIGHTS ", "nope.pth: no such file"), two_ranks,
             subprocess_only=True),
    ]


def all_cases() -> List[Case]:
    return (dataset_cases() + browser_cases() + image_cases() + viewer_cases() + results_cases()
            + config_cases() + weights_cases() + export_cases() + security_cases()
            + training_cases())


CASES = all_cases()
GROUPS = ("datasets", "images", "results", "configs", "weights", "security", "training")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The valid inputs the cases start from, made once for all of them."""
    return Inputs(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture
def as_a_user_sees_it(monkeypatch):
    """No --debug tracebacks, and warnings that reach the root logger land in the output."""
    monkeypatch.delenv("GN_DET_DEBUG", raising=False)
    with root_logs_to_stderr():
        yield


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.name}" for c in CASES])
def test_bad_input_ends_as_expected(case, inputs, tmp_path, as_a_user_sees_it):
    outcome = run_case(case, inputs, tmp_path, in_process=True)
    assert not outcome.problem, f"ended {outcome.code}: {outcome.line}"
    if case.expect == "error":
        assert outcome.code == 2 and ": error: " in outcome.line
    else:
        assert outcome.code == 0


def test_cases_cover_every_group_of_the_issue():
    groups = {g: [c for c in CASES if c.group == g] for g in GROUPS}
    assert all(groups.values()), {g: len(c) for g, c in groups.items()}
    assert {c.group for c in CASES} == set(GROUPS)
    names = {f"{c.group}: {c.name}" for c in CASES}
    assert len(names) == len(CASES) > 60  # unique names, so -k can pick each
    for expected in ("datasets: truncated JSON", "images: 16-bit image", "results: negative score",
                     "configs: both group modes set", "weights: shape mismatch",
                     "security: VOC filename with ../ (path traversal)", "training: NaN loss"):
        assert expected in names
    # Only the expected-valid inputs end in exit 0: box clean-up, empty results, 8-bit modes,
    # WS without norm, and --resume after a kill.
    assert {c.name for c in CASES if c.expect != "error"} >= {
        "bbox with NaN", "empty list (valid: zeros)", "RGBA image (converted by detectron2)"}
    through_train_net = [c for c in CASES if c.group in ("configs", "weights")
                         and c.expect == "error" and "convert_weights" not in c.name]
    assert len(through_train_net) > 20


def test_a_real_subprocess_case(inputs, tmp_path):
    (case,) = [c for c in CASES if c.name == "duplicate image id"]
    outcome = run_case(case, inputs, tmp_path, in_process=False)
    assert outcome.code == 2 and "duplicates images[0].id" in outcome.line
    assert outcome.problem == ""
