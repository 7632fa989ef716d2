"""gn_det.engine.defaults.write_final_metrics: metrics_final.json holds the evaluators' results as
fractions 0-1 (the unit of pycocotools and of the evaluator's metrics.json, stated in the file's
"ap_unit"), in strict JSON whose nulls (detectron2's NaN) say what they mean; detectron2's event
metrics.json is written as strict JSON lines."""
import json
import logging
import math
import time
from types import SimpleNamespace

import pytest
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.events import EventStorage
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gn_det.engine.defaults import (AP_UNIT, StrictJSONWriter, default_writers,
                                    results_as_fractions, write_final_metrics)

from cli_harness import HAND_ANNS, HAND_DETS, coco_scene


def refuse(token):
    raise AssertionError(f"{token} is not JSON")


def test_detectron2_percent_becomes_pycocotools_fractions():
    """detectron2's COCOEvaluator reports COCOeval's stats x 100 (NaN for pycocotools' -1); the
    final file must hold COCOeval's own numbers, as the evaluator's metrics.json does."""
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=5)
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    cocoeval = COCOeval(coco, coco.loadRes(dets), "bbox")
    cocoeval.evaluate()
    cocoeval.accumulate()
    cocoeval.summarize()
    evaluator = SimpleNamespace(_logger=logging.getLogger("test"))
    names = [c["name"] for c in gt["categories"]]
    percent = COCOEvaluator._derive_coco_results(evaluator, cocoeval, "bbox", names)
    final = results_as_fractions({"bbox": percent})["bbox"]
    stats = dict(zip(["AP", "AP50", "AP75", "APs", "APm", "APl"], cocoeval.stats[:6]))
    assert any(v < 0 for v in stats.values())  # an undefined stat (no GT of that size)
    for name, value in stats.items():
        if value < 0:
            assert math.isnan(final[name])  # null in the file
        else:
            assert final[name] == pytest.approx(value, abs=1e-12)
    assert final["AP-c1"] == pytest.approx(percent["AP-c1"] / 100)


def test_several_test_sets_nest_one_level_deeper():
    results = {"a_val": {"bbox": {"AP": 50.0, "AP-cat": float("nan")}},
               "b_val": {"bbox": {"AP": 12.5}}}
    final = results_as_fractions(results)
    assert final["a_val"]["bbox"]["AP"] == 0.5 and final["b_val"]["bbox"]["AP"] == 0.125
    assert math.isnan(final["a_val"]["bbox"]["AP-cat"])


def test_metrics_final_is_strict_json_in_fractions(tmp_path):
    results = {"bbox": {"AP": 12.0, "AP50": 40.25, "APs": float("nan")},
               "pr": {"P50@0.5": 58.0, "bestF50_score": 0.35}}
    write_final_metrics(str(tmp_path), "cfg.yaml", 8, time.perf_counter(), results)
    text = (tmp_path / "metrics_final.json").read_text()
    final = json.loads(text, parse_constant=refuse)  # no NaN / Infinity tokens
    assert final["ap_unit"] == AP_UNIT == "fraction (0-1)"
    assert final["results"] == {"bbox": {"AP": 0.12, "AP50": 0.4025, "APs": None},
                                "pr": {"P50@0.5": 0.58, "bestF50_score": 0.35}}
    assert "no ground truth" in final["null_means"]
    assert final["iteration"] == 8 and final["config_file"] == "cfg.yaml"
    assert results["bbox"]["AP"] == 12.0  # the caller's (detectron2's) results are untouched


def test_event_metrics_json_lines_are_strict(tmp_path):
    """detectron2's EvalHook puts the evaluator's NaN (an AP with no ground truth) into the event
    storage; OUTPUT_DIR/metrics.json must still be JSON, one object per line, NaN as null."""
    writers = default_writers(str(tmp_path), max_iter=10)
    (writer,) = [w for w in writers if isinstance(w, StrictJSONWriter)]
    with EventStorage(start_iter=0) as storage:
        storage.put_scalars(total_loss=1.5, smoothing_hint=False)
        writer.write()
        storage.step()
        storage.put_scalars(**{"bbox/AP": 12.0, "bbox/APl": float("nan"),
                               "loss_x": float("inf")}, smoothing_hint=False)
        writer.write()
    for w in writers:
        w.close()
    lines = (tmp_path / "metrics.json").read_text().splitlines()
    rows = [json.loads(line, parse_constant=refuse) for line in lines]
    assert rows == [{"iteration": 0, "total_loss": 1.5},
                    {"iteration": 1, "bbox/AP": 12.0, "bbox/APl": None, "loss_x": None}]
    assert [type(w).__name__ for w in writers] == ["CommonMetricPrinter", "StrictJSONWriter",
                                                   "TensorboardXWriter"]
