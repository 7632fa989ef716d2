"""gn_det.engine.inference: every inference path honours the training config's precision and
score thresholds. Evaluation during training runs the training model under its precision's
autocast without touching its weights (YAML Trainer.test and LazyConfig do_test); --eval-only
prepares the loaded model for bf16 inference (outputs within bf16's tolerance of fp32) and
applies MODEL.SCORE_THRESHOLDS_FILE; a bad thresholds file is one line naming file and field.
bf16 is forced with MODEL.PRECISION_FALLBACK none, so these run on any CPU."""
import copy
import json
import logging

import pytest
import torch

from cli_harness import TINY_MODEL_OPTS, TOY_CONFIG, tiny_dataset_opts
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import build_model
from helpers import REPO, export_model_opts
from gn_det.config import load_cfg, load_lazy_cfg
from gn_det.data import register_datasets_from_cfg
from gn_det.engine import Trainer, lazy_train
from gn_det.engine.inference import evaluation_autocast, prepare_eval_model, thresholds_file
from gn_det.engine.precision import precision_from_cfg, prepare_for_training
from gn_det.evaluation.thresholds import ThresholdsError
from gn_det.layers import WSConv2d
from gn_det.modeling.score_thresholds import score_thresholds_of

BF16 = ["MODEL.PRECISION", "bf16", "MODEL.PRECISION_FALLBACK", "none", "MODEL.DEVICE", "cpu"]
LAZY_TOY = str(REPO / "configs/lazy/toy/retinanet_R_18_FPN_gnws_shapes.py")


def toy_cfg(shapes, tmp_path, *opts):
    cfg = load_cfg(TOY_CONFIG, [*tiny_dataset_opts(shapes), *TINY_MODEL_OPTS, *BF16,
                                "OUTPUT_DIR", str(tmp_path / "out"), *opts])
    register_datasets_from_cfg(cfg)
    return cfg


def toy_model(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


class Recorder(DatasetEvaluator):
    """Records, per evaluated batch, the autocast state the backbone ran in and the outputs."""

    def __init__(self, model):
        self.calls, self.outputs = [], []
        model.backbone.register_forward_pre_hook(lambda m, a: self.calls.append(
            (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))

    def process(self, inputs, outputs):
        self.outputs += [o["instances"] for o in outputs]

    def evaluate(self):
        return {"bbox": {"AP": 0.0}}


@pytest.mark.slow  # builds and runs the toy model (5-10 s on the shared CPU)
def test_periodic_evaluation_runs_under_autocast_and_leaves_the_weights(tiny_shapes, tmp_path,
                                                                         caplog):
    cfg = toy_cfg(tiny_shapes, tmp_path)
    model = toy_model(cfg)
    prepare_for_training(model, precision_from_cfg(cfg, log=False))  # as Trainer does
    before = copy.deepcopy(model.state_dict())
    recorder = Recorder(model)
    with caplog.at_level(logging.INFO, logger="detectron2"):
        Trainer.test(cfg, model, [recorder])
    assert recorder.calls == [(True, torch.bfloat16)] * 4  # the 4 val images
    assert model.training and not torch.is_autocast_enabled("cpu")
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert all(o.scores.dtype == torch.float32 for o in recorder.outputs)
    assert "gn_det precision: bf16 on cpu (autocast, channels_last): evaluation under autocast " \
           "over the training model's weights" in caplog.text


def test_lazy_evaluation_runs_under_train_precision(monkeypatch):
    cfg = load_lazy_cfg(LAZY_TOY, ["train.precision=bf16", "train.precision_fallback=none"])
    seen = []
    monkeypatch.setattr(lazy_train, "inference_on_dataset", lambda model, loader, evaluator: (
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))) or {}))
    monkeypatch.setattr(lazy_train, "instantiate", lambda node: node)
    lazy_train.do_test(cfg, torch.nn.Linear(2, 2))
    assert seen == [(True, torch.bfloat16)] and not torch.is_autocast_enabled("cpu")
    with evaluation_autocast(load_lazy_cfg(LAZY_TOY, ["train.precision=fp32"]),
                             torch.nn.Linear(2, 2)):
        assert not torch.is_autocast_enabled("cpu")


def head_outputs(model, image):
    """The RetinaNet head's (logits, deltas) for one image, copied before post-processing's
    in-place sigmoid."""
    out = []
    handle = model.head.register_forward_hook(
        lambda m, a, o: out.append([torch.cat([t.flatten() for t in part]).clone()
                                    for part in o]))
    with torch.no_grad():
        detections = model([{"image": image}])[0]["instances"]
    handle.remove()
    return out[0], detections


@pytest.mark.slow  # builds and runs the toy model (5-10 s on the shared CPU)
def test_eval_only_bf16_outputs_are_within_bf16s_tolerance_of_fp32(tiny_shapes, tmp_path, caplog):
    """The toy GN+WS model prepared by --eval-only: plain convs in bf16, the head's logits
    within 0.05 and box deltas within 0.15 of fp32 (measured: 0.021 and 0.087, about 1 % and
    4 % of their largest values: bf16 keeps 8 significant bits), outputs in fp32."""
    cfg = toy_cfg(tiny_shapes, tmp_path, *export_model_opts("GN+WS"))
    from gn_det.benchmark.export_speed import like_trained

    fp32 = like_trained(toy_model(cfg))
    with caplog.at_level(logging.INFO, logger="detectron2"):
        bf16 = prepare_eval_model(copy.deepcopy(fp32), cfg)
    assert "gn_det precision: bf16 on cpu (autocast, channels_last): --eval-only: the model " \
           "prepared for inference (bf16 conv weights, autocast hooks)" in caplog.text
    plain = [m for m in bf16.modules() if isinstance(m, torch.nn.Conv2d)
             and not isinstance(m, WSConv2d)]
    assert plain and all(m.weight.dtype == torch.bfloat16 for m in plain)
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    (logits32, deltas32), _ = head_outputs(fp32, image)
    (logits16, deltas16), detections = head_outputs(bf16, image)
    assert logits16.dtype == deltas16.dtype == detections.scores.dtype == torch.float32
    assert 0 < (logits16 - logits32).abs().max() <= 0.05
    assert (deltas16 - deltas32).abs().max() <= 0.15


def write_thresholds(path, classes):
    path.write_text(json.dumps({"format": "gn_det.thresholds", "version": 1, "rule": "best_f1",
                                "classes": classes}))
    return str(path)


@pytest.mark.slow  # builds and runs the toy model (5-10 s on the shared CPU)
def test_eval_only_applies_the_score_thresholds_file(tiny_shapes, tmp_path, caplog):
    names = [c["name"] for c in json.loads(
        (tiny_shapes / "annotations" / "val.json").read_text())["categories"]]
    path = write_thresholds(tmp_path / "t.json", {
        names[0]: {"category_id": 1, "threshold": 0.16}, names[1]: {"category_id": 2,
                                                                   "threshold": None}})
    cfg = toy_cfg(tiny_shapes, tmp_path, "MODEL.SCORE_THRESHOLDS_FILE", path)
    from gn_det.benchmark.export_speed import like_trained

    model = like_trained(toy_model(cfg))
    with caplog.at_level(logging.INFO, logger="detectron2"):
        prepare_eval_model(model, cfg)
        recorder = Recorder(model)
        Trainer.test(cfg, model, [recorder])
    hook = score_thresholds_of(model)
    assert hook.table.tolist()[:2] == [pytest.approx(0.16), float("inf")]
    assert f"gn_det score thresholds (MODEL.SCORE_THRESHOLDS_FILE): {path} (best_f1): " \
           f"{names[0]} >= 0.16, {names[1]}: none" in caplog.text
    assert caplog.text.count("gn_det precision:") == 1  # prepared: no second line from test()
    kept = [(c, s) for o in recorder.outputs
            for c, s in zip(o.pred_classes.tolist(), o.scores.tolist())]
    assert kept and all(c != 1 and (c != 0 or s >= 0.16) for c, s in kept)
    assert recorder.calls == [(True, torch.bfloat16)] * 4


def test_bad_thresholds_files_are_one_line_naming_file_and_field(tiny_shapes, tmp_path):
    model = None
    cases = [
        ({"format": "yolo", "version": 1, "classes": {}}, r"t\.json: 'format' is 'yolo'"),
        ({"format": "gn_det.thresholds", "version": 1,
          "classes": {"RBC": {"category_id": 1, "threshold": 0.5}}},
         r"t\.json: classes\['RBC'\]: the model has no class 'RBC'; its classes are "),
        ({"format": "gn_det.thresholds", "version": 1,
          "classes": {"x": {"category_id": 1, "threshold": "high"}}},
         r"t\.json: classes\['x'\]\.threshold: is 'high'; expected a finite number"),
    ]
    for content, message in cases:
        path = tmp_path / "t.json"
        path.write_text(json.dumps(content))
        cfg = toy_cfg(tiny_shapes, tmp_path, "MODEL.SCORE_THRESHOLDS_FILE", str(path))
        model = model or toy_model(cfg)
        with pytest.raises(ThresholdsError, match=message) as info:
            prepare_eval_model(copy.deepcopy(model), cfg)
        assert "\n" not in str(info.value)
    lazy = load_lazy_cfg(LAZY_TOY, [f"train.score_thresholds_file={path}"])
    assert thresholds_file(lazy) == str(path)
