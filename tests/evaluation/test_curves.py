"""gn_det.evaluation.curves: P / R / F1 against the score threshold, by hand and against the P/R
table that counts_at computes on its own path, and the best-F1 point on the curve."""
import math

import numpy as np
import pytest

from cli_harness import coco_scene
from gn_det.evaluation.curves import score_curves
from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.results import load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair


def evaluate(gt, dets, scores=(0.05, 0.3, 0.5, 0.7)):
    coco = load_ground_truth(gt)
    return evaluate_detections(coco, load_results(dets, coco), [0.5], scores)


def test_hand_counted_steps():
    gt, dets = coco_scene([(1, 1, (0, 0, 40, 40)), (1, 1, (100, 100, 40, 40))],
                          [(1, 1, (0, 0, 40, 40), 0.9), (1, 1, (50, 50, 20, 20), 0.6),
                           (1, 1, (100, 100, 40, 40), 0.6)], num_images=1, num_classes=1)
    ev = evaluate(gt, dets)
    c1, overall = score_curves(ev.matches, 0.5, ev.class_names)
    assert (c1.name, overall.name) == ("c1", "overall")
    assert c1.thresholds.tolist() == [0.6, 0.9]
    assert c1.precision.tolist() == pytest.approx([2 / 3, 1.0])
    assert c1.recall.tolist() == [1.0, 0.5]
    p, r, f1 = c1.at([0.0, 0.6, 0.61, 0.9, 0.95])
    assert p[:4].tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0]) and math.isnan(p[4])
    assert r.tolist() == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert f1.tolist() == pytest.approx([0.8, 0.8, 2 / 3, 2 / 3, 0.0])
    assert c1.best == {"score": 0.6, "precision": pytest.approx(2 / 3), "recall": 1.0,
                       "f1": pytest.approx(0.8), "tp": 2, "fp": 1, "fn": 0}


@pytest.mark.parametrize("seed", [0, 1])
def test_same_as_the_pr_table_at_every_operating_point(seed):
    gt, dets = make_coco_pair(num_images=12, dets_per_image=25, num_classes=4, seed=seed)
    ev = evaluate(gt, dets)
    curves = score_curves(ev.matches, 0.5, ev.class_names)
    for s in ev.score_thresholds:
        at = ev.metrics["pr"]["0.5"][f"{s:g}"]
        for c in curves:
            v = at["overall"] if c.name == "overall" else at["per_class"][c.name]
            p, r, f1 = (float(x) for x in c.at(s))
            assert r == pytest.approx(v["recall"]) and f1 == pytest.approx(v["f1"])
            assert p == pytest.approx(v["precision"]) if v["tp"] + v["fp"] else math.isnan(p)


def test_best_f1_is_the_top_of_the_drawn_curve():
    gt, dets = make_coco_pair(num_images=12, dets_per_image=25, num_classes=3, seed=2)
    ev = evaluate(gt, dets)
    for c in score_curves(ev.matches, 0.5, ev.class_names):
        best = ev.metrics["best_f1_overall" if c.name == "overall" else "best_f1"]
        best = best if c.name == "overall" else best[c.name]
        assert c.best == best
        xs = c.drawn_at()
        assert xs[0] == 0.0 and xs[-1] >= 1.0 and np.all(np.diff(xs) > 0)
        f1 = c.at(xs)[2]
        assert f1.max() == pytest.approx(best["f1"])
        assert float(c.at(best["score"])[2]) == pytest.approx(best["f1"])


def test_no_detections_and_scores_above_one():
    gt, _ = coco_scene([(1, 1, (0, 0, 40, 40))], [], num_images=1, num_classes=2)
    ev = evaluate(gt, [])
    c = score_curves(ev.matches, 0.5, ev.class_names)[0]
    p, r, f1 = c.at([0.0, 0.5])
    assert np.isnan(p).all() and r.tolist() == [0.0, 0.0] and f1.tolist() == [0.0, 0.0]
    assert c.best["score"] is None and c.drawn_at()[-1] == 1.0
    gt, dets = coco_scene([(1, 1, (0, 0, 40, 40))], [(1, 1, (0, 0, 40, 40), 7.5)],
                          num_images=1, num_classes=1)
    c = score_curves(evaluate(gt, dets).matches, 0.5, ["c1"])[0]
    assert c.drawn_at()[-1] == 7.5 and float(c.at(7.5)[1]) == 1.0
