"""gn_det.evaluation.confusion: hand-counted scenes, and on random scenes the matrix reconciles
exactly with the P/R counts of the same COCOeval (diagonal = TP, row sums = GT, column sums =
TP + FP) at several operating points, under both COCOeval engines."""
import csv

import numpy as np
import pytest

from cli_harness import HAND_ANNS, HAND_DETS, coco_scene
from gn_det.evaluation.coco_stats import run_cocoeval
from gn_det.evaluation.confusion import confusion_matrix, outcomes_at, write_confusion_csv
from gn_det.evaluation.engine import ENGINES
from gn_det.evaluation.matching import counts_at, match_from_cocoeval, with_boxes
from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.results import load_ground_truth, load_results, results_to_coco
from gn_det.evaluation.synthetic import make_coco_pair

C1, C2 = 1, 2
# HAND_ANNS / HAND_DETS (cli_harness): one case per image, counted by hand at IoU 0.5, score >= 0.5.
#                 predicted: c1 c2 c3 bg       (rows: ground truth c1, c2, c3, background)
HAND_MATRIX = [[2, 0, 0, 0],
               [2, 0, 0, 0],
               [0, 0, 0, 2],
               [2, 3, 1, 0]]


def evaluate(gt, dets, ious=(0.5,), scores=(0.5,), main_score=0.5, engine="faster"):
    coco = load_ground_truth(gt, engine)
    return evaluate_detections(coco, load_results(dets, coco), ious, scores, main_score)


def assert_reconciles(ev, cm, iou, score):
    """Diagonal = TP, column sums = TP + FP, row sums = TP + FN, per class, as in the P/R table;
    the background column = the FN not paired with a wrong-class detection."""
    at = ev.metrics["pr"][f"{iou:g}"][f"{score:g}"]["per_class"]
    k = len(ev.class_names)
    for i, name in enumerate(ev.class_names):
        v = at[name]
        assert cm.matrix[i, i] == v["tp"], name
        assert cm.matrix[:, i].sum() == v["tp"] + v["fp"], name
        assert cm.matrix[i, :].sum() == v["tp"] + v["fn"] == ev.metrics["settings"]["num_gt"][name]
        assert cm.matrix[i, k] == v["fn"] - (cm.matrix[i, :k].sum() - cm.matrix[i, i]), name
    assert cm.matrix[k, k] == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_hand_counted_cases(engine):
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=5)
    ev = evaluate(gt, dets, engine=engine)
    assert ev.confusion.labels == ("c1", "c2", "c3", "background")
    assert ev.confusion.matrix.tolist() == HAND_MATRIX
    assert ev.metrics["confusion"] == {"iou": 0.5, "score": 0.5, "rows": "ground truth",
                                       "columns": "predicted",
                                       "labels": ["c1", "c2", "c3", "background"],
                                       "matrix": HAND_MATRIX}
    assert_reconciles(ev, ev.confusion, 0.5, 0.5)
    overall = ev.metrics["pr"]["0.5"]["0.5"]["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"]) == (2, 8, 4)


def test_the_pairing_changes_no_count():
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=5)
    ev = evaluate(gt, dets)
    o = ev.outcomes
    tp, fp, _ = counts_at(ev.matches, [0.5])
    assert o.tp.sum() == tp.sum() and o.fp.sum() == fp.sum()
    assert np.array_equal(o.tp, ev.matches.tp[0] & (ev.matches.scores >= 0.5))
    # each GT is hit by at most one detection and vice versa
    hit = o.gt_hit[o.gt_hit >= 0]
    assert len(set(hit.tolist())) == len(hit)
    assert all(o.paired_gt[d] == g for g, d in enumerate(o.gt_hit) if d >= 0)


def test_lower_threshold_and_stricter_iou():
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=5)
    ev = evaluate(gt, dets, ious=(0.5, 0.75), scores=(0.3, 0.5))
    # score >= 0.3 keeps image 1's c1 duplicate at 0.3: one more background FP of c1
    cm = confusion_matrix(ev.matches, outcomes_at(ev.matches, 0.5, 0.3),
                          ev.class_names)
    assert cm.matrix[3, 0] == HAND_MATRIX[3][0] + 1
    assert_reconciles(ev, cm, 0.5, 0.3)
    # at IoU 0.75 the c1 detection on the c2 GT of image 5 (IoU .78) still pairs; all else same
    cm = confusion_matrix(ev.matches, outcomes_at(ev.matches, 0.75, 0.5),
                          ev.class_names)
    assert cm.matrix.tolist() == HAND_MATRIX
    assert_reconciles(ev, cm, 0.75, 0.5)


def test_image_without_annotations_only():
    gt, dets = coco_scene([], [(1, C2, (0, 0, 20, 20), 0.9), (2, C1, (5, 5, 9, 9), 0.4)],
                          num_images=2, num_classes=2)
    ev = evaluate(gt, dets, scores=(0.3,), main_score=0.3)
    assert ev.confusion.matrix.tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 0]]


def test_no_detections():
    gt, _ = coco_scene([(1, C1, (10, 10, 40, 40)), (1, C2, (0, 0, 5, 5))], [], num_classes=2)
    ev = evaluate(gt, [])
    assert ev.confusion.matrix.tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_reconcile(seed, engine):
    gt, dets = make_coco_pair(num_images=15, dets_per_image=30, num_classes=5,
                              crowd_fraction=0.1, seed=seed)
    ev = evaluate(gt, dets, ious=(0.5, 0.75), scores=(0.05, 0.3, 0.5, 0.7), engine=engine)
    assert_reconciles(ev, ev.confusion, 0.5, 0.5)
    off_diagonal = ev.confusion.matrix[:-1, :-1].sum() - np.trace(ev.confusion.matrix[:-1, :-1])
    assert off_diagonal > 0  # the synthetic data has wrong-class copies of objects
    for iou in (0.5, 0.75):
        for score in (0.05, 0.3, 0.7):
            cm = confusion_matrix(ev.matches, outcomes_at(ev.matches, iou, score),
                                  ev.class_names)
            assert_reconciles(ev, cm, iou, score)


def test_diagonal_is_cocoeval_tp_even_without_the_pairing():
    # cross-check against pycocotools directly: the diagonal is COCOeval's own TP count
    gt, dets = make_coco_pair(num_images=10, dets_per_image=20, num_classes=3, seed=6)
    coco = load_ground_truth(gt, "pycocotools")
    dets = load_results(dets, coco)
    cocoeval = run_cocoeval(coco, results_to_coco(coco, dets))
    matches = with_boxes(match_from_cocoeval(cocoeval, [0.5]), coco, dets)
    cm = confusion_matrix(matches, outcomes_at(matches, 0.5, 0.5), ["a", "b", "c"])
    # and the faster engine's matrix is the same
    assert cm.matrix.tolist() == evaluate(gt, dets, main_score=0.5).confusion.matrix.tolist()
    t = list(np.round(cocoeval.params.iouThrs, 2)).index(0.5)
    for k, cat in enumerate(cocoeval.params.catIds):
        tp = 0
        for e in cocoeval.evalImgs:
            if e is None or e["category_id"] != cat or e["aRng"] != [0, 1e10] \
                    or e["maxDet"] != 100:
                continue
            keep = np.asarray(e["dtScores"]) >= 0.5
            tp += int(((e["dtMatches"][t] > 0) & ~e["dtIgnore"][t].astype(bool) & keep).sum())
        assert cm.matrix[k, k] == tp


def test_csv_says_which_axis_is_which(tmp_path):
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=5)
    ev = evaluate(gt, dets)
    rows = list(csv.reader(open(write_confusion_csv(ev.confusion, str(tmp_path / "cm.csv")))))
    assert rows[0] == ["ground truth \\ predicted (IoU 0.5, score >= 0.5)", "c1", "c2", "c3",
                       "background"]
    assert [r[0] for r in rows[1:]] == ["c1", "c2", "c3", "background"]
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == HAND_MATRIX
