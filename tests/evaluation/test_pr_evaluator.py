"""gn_det.evaluation.pr_evaluator end to end on fake model outputs (Instances)."""
import contextlib
import io
import json
import logging
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import COCOEvaluator, print_csv_format
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.structures import Boxes, Instances

from gn_det.config import add_gn_det_config
from gn_det.engine import launch
from gn_det.evaluation import PREvaluator, ResultsError, build_pr_evaluator, read_thresholds
from gn_det.evaluation.synthetic import make_coco_pair

CAT_IDS = [1, 5, 7]  # not contiguous: exercises the contiguous-index → dataset-id mapping


def make_dataset(tmp_path, name, num_images=12, seed=0, write=True):
    """A registered COCO-json dataset and detections for it (dataset category ids); `write`
    False registers an existing file (worker processes must not rewrite it concurrently)."""
    gt, dets = make_coco_pair(num_images=num_images, dets_per_image=25, num_classes=3,
                              crowd_fraction=0.05, image_size=128, seed=seed)
    remap = {i + 1: c for i, c in enumerate(CAT_IDS)}
    for c in gt["categories"]:
        c["id"] = remap[c["id"]]
    for a in gt["annotations"] + dets:
        a["category_id"] = remap[a["category_id"]]
    path = tmp_path / f"{name}.json"
    if write:
        path.write_text(json.dumps(gt))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(path), str(tmp_path))
    DatasetCatalog.get(name)  # load_coco_json sets thing_dataset_id_to_contiguous_id
    return gt, dets, path


def model_io(gt, dets, name, image_ids=None):
    """(inputs, outputs) per image as a detectron2 model gives them."""
    to_index = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    pairs = []
    for img in gt["images"]:
        if image_ids is not None and img["id"] not in image_ids:
            continue
        mine = [d for d in dets if d["image_id"] == img["id"]]
        xywh = torch.tensor([d["bbox"] for d in mine], dtype=torch.float32).reshape(-1, 4)
        inst = Instances((img["height"], img["width"]))
        inst.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))
        inst.scores = torch.tensor([d["score"] for d in mine], dtype=torch.float32)
        inst.pred_classes = torch.tensor([to_index[d["category_id"]] for d in mine],
                                         dtype=torch.int64)
        pairs.append(({"image_id": img["id"], "height": img["height"], "width": img["width"]},
                      {"instances": inst}))
    return pairs


def run(evaluator, pairs, batch=2):
    evaluator.reset()
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        evaluator.process([p[0] for p in chunk], [p[1] for p in chunk])
    return evaluator.evaluate()


def reference_stats(gt_path, results_path):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        e = COCOeval(coco, coco.loadRes(str(results_path)), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


def test_end_to_end(tmp_path, caplog):
    gt, dets, gt_path = make_dataset(tmp_path, "gn_det_test_pr_e2e")
    out = tmp_path / "eval"
    evaluator = PREvaluator("gn_det_test_pr_e2e", output_dir=str(out))
    with caplog.at_level(logging.INFO):
        results = run(evaluator, model_io(gt, dets, "gn_det_test_pr_e2e"))
    for f in ("metrics.json", "metrics.csv", "thresholds.json", "pr_curves.png",
              "coco_instances_results.json", "confusion_matrix.csv", "confusion_matrix.png",
              "p_curve.png", "r_curve.png", "f1_curve.png", "tide_errors.png"):
        assert (out / f).is_file(), f
    # the deploy thresholds the trainer's evaluator writes are what gn_det reads back
    thresholds = read_thresholds(out / "thresholds.json")
    assert set(thresholds.by_category_id) == set(CAT_IDS)
    # the evaluator's COCO numbers are pycocotools' on the results it wrote
    ref = reference_stats(gt_path, out / "coco_instances_results.json")
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    for name, r in zip(names, ref):
        v = results["bbox"][name]
        assert (math.isnan(v) if r < 0 else v == pytest.approx(100 * r, abs=1e-4)), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved.pop("ap_unit") == "fraction (0-1)" and saved.pop("null_means")
    assert saved == json.loads(json.dumps(evaluator.metrics))
    written = json.loads((out / "coco_instances_results.json").read_text())
    assert {d["category_id"] for d in written} <= set(CAT_IDS)
    at = saved["pr"]["0.5"]["0.5"]
    assert results["pr"]["P50@0.5"] == pytest.approx(100 * at["overall"]["precision"])
    assert results["pr"]["R75@0.05"] == pytest.approx(
        100 * saved["pr"]["0.75"]["0.05"]["overall"]["recall"])
    assert results["pr"]["F50@0.5-class_02"] == pytest.approx(
        100 * at["per_class"]["class_02"]["f1"])
    assert "AP-class_03" in results["bbox"]
    # detectron2's consumers of evaluator results: print_csv_format and EvalHook's float check
    print_csv_format(results)
    for v in flatten_results_dict(results).values():
        float(v)
    assert "P/R/F1 at IoU 0.5, score >= 0.5" in caplog.text
    # the confusion matrix of the same matches: diagonal = the TP of the P/R table
    cm = saved["confusion"]
    assert cm["labels"] == ["class_01", "class_02", "class_03", "background"]
    assert [cm["matrix"][k][k] for k in range(3)] == [
        at["per_class"][n]["tp"] for n in ("class_01", "class_02", "class_03")]
    assert sum(row[-1] for row in cm["matrix"]) <= at["overall"]["fn"]
    assert "Confusion matrix at IoU 0.5, score >= 0.5" in caplog.text
    assert "Errors by type (TIDE) at IoU 0.5" in caplog.text


def test_same_ap_as_detectron2_coco_evaluator(tmp_path):
    gt, dets, _ = make_dataset(tmp_path, "gn_det_test_pr_vs_d2", seed=3)
    pairs = model_io(gt, dets, "gn_det_test_pr_vs_d2")
    ours = run(PREvaluator("gn_det_test_pr_vs_d2", plot=False), pairs)
    theirs = run(COCOEvaluator("gn_det_test_pr_vs_d2", use_fast_impl=False), pairs)
    for k, v in theirs["bbox"].items():
        assert ours["bbox"][k] == pytest.approx(v, abs=1e-9, nan_ok=True), k


def test_images_without_detections_give_zeros(tmp_path):
    gt, _, _ = make_dataset(tmp_path, "gn_det_test_pr_empty", num_images=4)
    evaluator = PREvaluator("gn_det_test_pr_empty", output_dir=str(tmp_path / "eval"),
                            plot=False)
    results = run(evaluator, model_io(gt, [], "gn_det_test_pr_empty"))
    assert (tmp_path / "eval" / "confusion_matrix.csv").is_file()
    assert not (tmp_path / "eval" / "confusion_matrix.png").exists()
    assert results["bbox"]["AP"] == 0.0 and results["pr"]["R50@0.5"] == 0.0
    assert evaluator.metrics["best_f1_overall"]["score"] is None


def test_class_index_outside_the_dataset_is_named(tmp_path):
    gt, dets, _ = make_dataset(tmp_path, "gn_det_test_pr_badclass", num_images=3)
    pairs = model_io(gt, dets, "gn_det_test_pr_badclass")
    pairs[0][1]["instances"].pred_classes[0] = 9
    with pytest.raises(ResultsError, match=r"class index 9 is not a class of the dataset "
                                           r"\(valid: 0\.\.2\)"):
        run(PREvaluator("gn_det_test_pr_badclass", plot=False), pairs)


def test_build_from_config(tmp_path):
    make_dataset(tmp_path, "gn_det_test_pr_cfg", num_images=2)
    cfg = add_gn_det_config(get_cfg())
    assert list(cfg.TEST.PR.SCORE_THRESHOLDS) == [0.05, 0.3, 0.5, 0.7]
    assert (cfg.TEST.PR.ENGINE, cfg.TEST.PR.TARGET_PRECISION) == ("faster", 0.0)
    cfg.TEST.PR.IOU_THRESHOLDS = [0.6]
    cfg.TEST.PR.MAIN_SCORE = 0.4
    cfg.TEST.PR.ENGINE = "pycocotools"
    cfg.TEST.PR.TARGET_PRECISION = 0.9
    ev = build_pr_evaluator(cfg, "gn_det_test_pr_cfg", str(tmp_path))
    assert ev._iou_thresholds == [0.6] and ev._main_score == 0.4
    assert ev._engine == "pycocotools" and ev._target_precision == 0.9
    assert type(ev._coco_api).__module__.startswith("pycocotools")
    cfg.TEST.PR.ENGINE = "fastest"
    with pytest.raises(ValueError, match="engine 'fastest' is unknown; valid: faster, pycoco"):
        build_pr_evaluator(cfg, "gn_det_test_pr_cfg", str(tmp_path))
    cfg.TEST.PR.ENGINE = "faster"
    cfg.TEST.PR.IOU_THRESHOLDS = [1.5]
    with pytest.raises(ValueError, match="IoU threshold 1.5 is outside"):
        build_pr_evaluator(cfg, "gn_det_test_pr_cfg", str(tmp_path))


def test_overrides_a_method_coco_evaluator_calls():
    # PREvaluator replaces COCOEvaluator's scoring step; it must still exist upstream, with img_ids
    import inspect

    assert "img_ids" in inspect.signature(COCOEvaluator._eval_predictions).parameters
    assert "_eval_predictions" in inspect.getsource(COCOEvaluator.evaluate)


def _two_rank_worker(tmp_dir):
    """Each rank feeds half the images; rank 0 gathers and scores all of them."""
    import gn_det  # noqa: F401
    from pathlib import Path

    from detectron2.utils import comm

    tmp = Path(tmp_dir)
    gt, dets, _ = make_dataset(tmp, "gn_det_test_pr_ranks", write=False)
    ids = [img["id"] for img in gt["images"]][comm.get_rank()::2]
    results = run(PREvaluator("gn_det_test_pr_ranks", plot=False),
                  model_io(gt, dets, "gn_det_test_pr_ranks", set(ids)))
    if comm.is_main_process():
        (tmp / "ranks.json").write_text(json.dumps(results))
    else:
        assert results == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) path")
def test_gathers_across_ranks(tmp_path):
    make_dataset(tmp_path, "gn_det_test_pr_ranks")
    launch(_two_rank_worker, 2, dist_url="auto", args=(str(tmp_path),))
    gathered = json.loads((tmp_path / "ranks.json").read_text())
    gt, dets, _ = make_dataset(tmp_path, "gn_det_test_pr_ranks", write=False)
    single = run(PREvaluator("gn_det_test_pr_ranks", plot=False, distributed=False),
                 model_io(gt, dets, "gn_det_test_pr_ranks"))
    assert gathered["bbox"]["AP"] == pytest.approx(single["bbox"]["AP"])
    assert np.allclose([gathered["pr"][k] for k in single["pr"]], list(single["pr"].values()))
