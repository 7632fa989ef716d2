"""gn_det.evaluation.coco_stats under both engines against pycocotools' own summarize(), run the
textbook way."""
import contextlib
import copy
import io
import json
import logging

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gn_det.evaluation.coco_stats import STAT_NAMES, coco_stats, per_class_ap, run_cocoeval
from gn_det.evaluation.engine import ENGINES
from gn_det.evaluation.results import load_ground_truth, load_results, results_to_coco
from gn_det.evaluation.synthetic import make_coco_pair


def reference_stats(gt, dets, tmp_path):
    """COCO(file) → loadRes → COCOeval.evaluate/accumulate/summarize, as the COCO API demo."""
    path = tmp_path / "ref_gt.json"
    path.write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        cocoeval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return cocoeval


def ours(gt, dets, engine="faster", **kw):
    coco_gt = load_ground_truth(gt, engine)
    return run_cocoeval(coco_gt, results_to_coco(coco_gt, load_results(dets, coco_gt)), **kw)


def crafted():
    """Crowd regions, a class without GT, an image without GT, duplicates, ties, 120 dets."""
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 300, "width": 300} for i in (1, 2, 3)]
    cats = [{"id": c, "name": n} for c, n in ((1, "a"), (2, "b"), (7, "c"))]
    anns = [(1, 1, [10, 10, 40, 40], 0), (1, 1, [100, 100, 150, 150], 1), (1, 2, [5, 5, 20, 20], 0),
            (2, 2, [50, 50, 200, 120], 0), (2, 1, [0, 0, 8, 8], 0)]
    annotations = [dict(id=i + 1, image_id=a[0], category_id=a[1], bbox=a[2], iscrowd=a[3],
                        area=a[2][2] * a[2][3]) for i, a in enumerate(anns)]
    dets = [(1, 1, [10, 10, 40, 40], 0.9), (1, 1, [10, 10, 40, 40], 0.9),
            (1, 1, [120, 120, 30, 30], 0.8), (1, 7, [10, 10, 40, 40], 0.7),
            (3, 1, [0, 0, 30, 30], 0.6), (2, 2, [55, 50, 200, 120], 0.5),
            (2, 1, [0, 0, 9, 8], 0.5)]
    dets += [(2, 2, [i, i, 100, 60], 0.4 - i * 0.001) for i in range(120)]
    results = [dict(image_id=d[0], category_id=d[1], bbox=d[2], score=d[3]) for d in dets]
    return {"images": images, "annotations": annotations, "categories": cats}, results


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("data", ["random", "crafted"])
def test_stats_equal_pycocotools_summarize(data, engine, tmp_path):
    gt, dets = (make_coco_pair(num_images=30, dets_per_image=50, num_classes=6, seed=4,
                               crowd_fraction=0.05)
                if data == "random" else crafted())
    ref = reference_stats(gt, dets, tmp_path)
    stats = coco_stats(ours(gt, dets, engine))
    assert list(stats) == list(STAT_NAMES)
    for name, r in zip(STAT_NAMES, ref.stats):
        if r < 0:
            assert stats[name] is None, name
        else:
            assert stats[name] == pytest.approx(r, abs=1e-6), name


@pytest.mark.parametrize("engine", ENGINES)
def test_per_class_ap_is_detectron2s_formula(engine, tmp_path):
    gt, dets = crafted()
    ref = reference_stats(gt, dets, tmp_path)
    ap = per_class_ap(ours(gt, dets, engine))
    assert list(ap) == [1, 2, 7]
    for k, cat in enumerate([1, 2, 7]):
        p = ref.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        assert ap[cat] == (pytest.approx(float(np.mean(p)), abs=1e-9) if p.size else None)
    assert ap[7] is None  # no GT for category 7


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_results_give_zeros(engine):
    gt, _ = crafted()
    stats = coco_stats(ours(gt, [], engine))
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0
    assert stats["APl"] == 0.0  # GT exists in every area range here


@pytest.mark.parametrize("engine", ENGINES)
def test_progress_logs_and_changes_nothing(engine, caplog):
    gt, dets = make_coco_pair(num_images=8, dets_per_image=20, num_classes=3, seed=2)
    plain = ours(gt, dets, engine)
    with caplog.at_level(logging.INFO, logger="gn_det.evaluation.coco_stats"):
        logged = ours(gt, dets, engine, progress=True)
    assert np.array_equal(plain.stats, logged.stats)
    assert f"COCOeval ({engine}): done" in caplog.text
    if engine == "faster":  # one line per class chunk, so no C++ stretch goes unreported
        assert "matched and accumulated classes 3/3" in caplog.text
    else:
        assert "accumulating" in caplog.text
    assert "computeIoU" not in vars(logged)  # wrappers removed after evaluate
