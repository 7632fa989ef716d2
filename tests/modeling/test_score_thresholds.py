"""gn_det.modeling.score_thresholds: a thresholds.json attached to a detector drops, in eval mode,
each detection below its class's threshold (classes the file lacks keep the model's own, a null
threshold keeps none), leaves training alone, survives a deep copy, and refuses a file made for
other classes in one line."""
import copy

import pytest
import torch

from helpers import tiny_export_model
from gn_det.evaluation.thresholds import ThresholdsError, parse_thresholds
from gn_det.modeling.score_thresholds import (attach_score_thresholds, model_score_thresh,
                                              score_thresholds_of)

NAMES = ["circle", "square", "triangle", "star"]


def thresholds(entries, source="t.json"):
    return parse_thresholds({"format": "gn_det.thresholds", "version": 1, "classes": {
        name: {"category_id": i + 1, "threshold": thr}
        for i, (name, thr) in enumerate(entries.items())}}, source)


def detect(model, image):
    with torch.no_grad():
        return model([{"image": image}])[0]["instances"]


def test_thresholds_drop_detections_per_class_in_eval_mode():
    _, model = tiny_export_model("GN")
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)) * 255
    plain = detect(model, image)
    median = float(plain.scores.median())
    hook = attach_score_thresholds(model, thresholds({"circle": median, "square": None}), NAMES)
    got = detect(model, image)
    expected = [(c, s) for c, s in zip(plain.pred_classes.tolist(), plain.scores.tolist())
                if (c == 0 and s >= median) or c in (2, 3)]  # square: none; others: the model's
    assert sorted(zip(got.pred_classes.tolist(), got.scores.tolist())) == sorted(expected)
    assert 0 < len(got) < len(plain) and (got.pred_classes == 1).sum() == 0
    assert hook.table.tolist() == pytest.approx([median, float("inf"), 0.05, 0.05])
    assert hook.describe().startswith("t.json (best_f1): circle >= ")
    assert hook.describe().endswith("square: none; 2 other classes keep the model's 0.05")
    assert model_score_thresh(model) == 0.05
    copied = copy.deepcopy(model)  # what the export's WS folding does
    assert score_thresholds_of(copied) is not None and len(detect(copied, image)) == len(got)


def test_training_outputs_and_other_outputs_pass_untouched():
    _, model = tiny_export_model("GN")
    hook = attach_score_thresholds(model, thresholds({"circle": 0.99}), NAMES)
    losses = {"loss_cls": torch.tensor(1.0)}
    assert hook(model.train(), (), losses) is None  # training returns losses: not filtered
    assert hook(model.eval(), (), [{"sem_seg": torch.zeros(1)}]) == [{"sem_seg": torch.zeros(1)}]


def test_attaching_again_replaces_the_thresholds():
    _, model = tiny_export_model("GN")
    attach_score_thresholds(model, thresholds({"circle": 0.99}), NAMES)
    second = attach_score_thresholds(model, thresholds({"star": 0.5}, "u.json"), NAMES)
    assert score_thresholds_of(model) is second and len(model._forward_hooks) == 1


def test_a_file_for_other_classes_is_one_line():
    _, model = tiny_export_model("GN")
    with pytest.raises(ThresholdsError, match=r"^t\.json: classes\['RBC'\]: the model has no class "
                                              r"'RBC'; its classes are 'circle', 'square', "):
        attach_score_thresholds(model, thresholds({"circle": 0.3, "RBC": 0.5}), NAMES)
    with pytest.raises(ThresholdsError, match=r"^t\.json: the model has 4 classes but its dataset "
                                              r"names 2;"):
        attach_score_thresholds(model, thresholds({"circle": 0.3}), NAMES[:2])
    assert score_thresholds_of(model) is None
