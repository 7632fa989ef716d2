"""gn_det.evaluation.errors: each FP's kind and each GT's status on hand-counted scenes, per-image
counts that add up to the P/R table, the worst-image ranking, and the CSV / JSON."""
import csv
import json

import pytest

from cli_harness import HAND_ANNS, HAND_DETS, coco_scene
from gn_det.evaluation.errors import image_errors, totals, worst_images, write_image_errors
from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.results import load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair

C1, C2 = 1, 2


def analyze(gt, dets, iou=0.5, score=0.5):
    coco = load_ground_truth(gt)
    ev = evaluate_detections(coco, load_results(dets, coco), [iou], [score], score)
    return ev, {e.image_id: e for e in image_errors(ev)}


def kinds(e):
    return [(d["kind"], d["score"]) for d in sorted(e.dets, key=lambda d: -d["score"])]


def test_fp_kinds_and_gt_status_by_hand():
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=5)
    ev, by_image = analyze(gt, dets)
    # image 1: TP; c1 on the missed c2 GT (paired in the confusion matrix); c3 on nothing
    assert kinds(by_image[1]) == [("tp", 0.9), ("wrong_class", 0.8), ("background", 0.7)]
    assert [(g["status"], g["confused_with"]) for g in by_image[1].gt] == [
        ("tp", None), ("fn", 0), ("fn", None)]
    wrong = by_image[1].dets[[d["score"] for d in by_image[1].dets].index(0.8)]
    assert wrong["gt_label"] == 1 and wrong["paired"]
    # image 2: absorbed by the crowd (shown, not counted); a c2 detection in a c1 crowd
    assert kinds(by_image[2]) == [("ignored", 0.9), ("background", 0.8)]
    assert [g["status"] for g in by_image[2].gt] == ["crowd"]
    assert by_image[2].counts["gt"] == 0 and by_image[2].counts["fp"] == 1
    # image 3: no annotations
    assert kinds(by_image[3]) == [("background", 0.6)] and by_image[3].gt == []
    # image 4: a c2 detection on a c1 object its class found: wrong class, not paired; duplicate
    assert kinds(by_image[4]) == [("tp", 0.9), ("wrong_class", 0.8), ("duplicate", 0.7)]
    assert not [d for d in by_image[4].dets if d["kind"] == "wrong_class"][0]["paired"]
    # image 5: both c1 detections sit on the c2 GT; only the first is paired
    assert kinds(by_image[5]) == [("wrong_class", 0.9), ("wrong_class", 0.8)]
    assert [d["paired"] for d in sorted(by_image[5].dets, key=lambda d: -d["score"])] == [
        True, False]
    t = totals(by_image.values())
    assert t == {"gt": 6, "tp": 2, "fp": 8, "fp_wrong_class": 4, "fp_duplicate": 1,
                 "fp_poor_localization": 0, "fp_background": 3, "fn": 4, "errors": 12}
    # the paired ones are exactly the confusion matrix's off-diagonal cells
    cm = ev.confusion.matrix[:-1, :-1]
    paired = sum(d["paired"] for e in by_image.values() for d in e.dets)
    assert paired == cm.sum() - cm.trace() == 2


def test_poor_localization_and_its_bounds():
    gt, dets = coco_scene([(1, C1, (0, 0, 40, 40))],
                          [(1, C1, (20, 0, 40, 40), 0.9),    # IoU 1/3: poor localization
                           (1, C1, (38, 38, 40, 40), 0.8),   # IoU 0.001: background
                           (1, C1, (0, 0, 40, 36), 0.7)],    # IoU 0.9, GT matched? no: TP
                          num_images=1, num_classes=1)
    _, by_image = analyze(gt, dets)
    e = by_image[1]
    assert kinds(e) == [("poor_localization", 0.9), ("background", 0.8), ("tp", 0.7)]
    assert sorted(e.dets, key=lambda d: -d["score"])[0]["iou"] == pytest.approx(1 / 3)
    # at IoU 0.3 the 0.9 detection matches and the 0.7 one becomes its duplicate
    _, by_image = analyze(gt, dets, iou=0.3)
    assert kinds(by_image[1]) == [("tp", 0.9), ("background", 0.8), ("duplicate", 0.7)]


@pytest.mark.parametrize("seed", [0, 3])
def test_counts_add_up_to_the_pr_table(seed):
    gt, dets = make_coco_pair(num_images=12, dets_per_image=25, num_classes=4,
                              crowd_fraction=0.1, seed=seed)
    ev, by_image = analyze(gt, dets, score=0.3)
    overall = ev.metrics["pr"]["0.5"]["0.3"]["overall"]
    t = totals(by_image.values())
    assert (t["tp"], t["fp"], t["fn"]) == (overall["tp"], overall["fp"], overall["fn"])
    assert t["gt"] == sum(ev.metrics["settings"]["num_gt"].values())
    assert sum(t[f"fp_{k}"] for k in ("wrong_class", "duplicate", "poor_localization",
                                      "background")) == t["fp"]
    assert min(t[f"fp_{k}"] for k in ("wrong_class", "duplicate", "poor_localization")) > 0
    # a lower threshold shows more detections, at other thresholds than the evaluation's main
    more = image_errors(ev, score=0.05)
    assert totals(more)["tp"] + totals(more)["fp"] > t["tp"] + t["fp"]


def test_worst_images_and_files(tmp_path):
    gt, dets = coco_scene(HAND_ANNS, HAND_DETS, num_images=6)  # image 6: nothing at all
    _, by_image = analyze(gt, dets)
    errors = list(by_image.values())
    assert [e.image_id for e in worst_images(errors, 10)] == [1, 5, 4, 2, 3]
    assert [e.image_id for e in worst_images(errors, 2)] == [1, 5]
    write_image_errors(errors, str(tmp_path / "e.csv"), str(tmp_path / "e.json"), {"iou": 0.5})
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert [int(r["image_id"]) for r in rows] == [1, 5, 4, 2, 3, 6]
    assert rows[0]["file_name"] == "1.jpg" and rows[0]["errors"] == "4"
    assert rows[0]["fp_wrong_class"] == "1" and rows[0]["fp_background"] == "1"
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["settings"] == {"iou": 0.5} and saved["totals"]["fp"] == 8
    assert saved["images"][-1] == dict(image_id=6, file_name="6.jpg", **{
        k: 0 for k in ("gt", "tp", "fp", "fp_wrong_class", "fp_duplicate",
                       "fp_poor_localization", "fp_background", "fn", "errors")})
