"""gn_det.evaluation.matching (pycocotools' evalImgs) and gn_det.evaluation.greedy (the same rule
for faster-coco-eval) against a plain greedy matcher written here from the COCO rules."""
import numpy as np
import pytest

from cli_harness import coco_scene as scene
from gn_det.evaluation.coco_stats import run_cocoeval
from gn_det.evaluation.engine import ENGINES
from gn_det.evaluation.greedy import match_detections
from gn_det.evaluation.matching import best_f1, counts_at, curve, match_from_cocoeval, ratios
from gn_det.evaluation.results import load_ground_truth, load_results, results_to_coco
from gn_det.evaluation.synthetic import make_coco_pair

SCORES = [0.05, 0.3, 0.5, 0.7]


# ------------------------------------------------------------------------ reference matcher
def _iou(d, g, crowd):
    """Box IoU of XYWH boxes; for a crowd region, the share of the detection inside it."""
    iw = max(0.0, min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0]))
    ih = max(0.0, min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1]))
    inter = iw * ih
    union = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter
    return inter / union if union > 0 else 0.0


def reference_outcomes(gt, dets, iou_thr, max_dets=100):
    """[(score, category_id, outcome)] with outcome "tp", "fp" or "ignored", and regular GT counts.

    Per image and class: detections by descending score (stable), the first max_dets; each takes
    the unmatched regular GT of highest IoU >= threshold (the later one on equal IoU, as COCO),
    else a crowd region of highest IoU (crowd regions absorb any number of detections).
    """
    thr = min(iou_thr, 1 - 1e-10)
    out, num_gt = [], {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            num_gt[ann["category_id"]] = num_gt.get(ann["category_id"], 0) + 1
    keys = {(d["image_id"], d["category_id"]) for d in dets}
    for img, cat in keys:
        gts = [a for a in gt["annotations"] if a["image_id"] == img and a["category_id"] == cat]
        regular = [a for a in gts if not a.get("iscrowd", 0)]
        crowd = [a for a in gts if a.get("iscrowd", 0)]
        ds = sorted((d for d in dets if d["image_id"] == img and d["category_id"] == cat),
                    key=lambda d: -d["score"])[:max_dets]
        taken = set()
        for d in ds:
            best, best_iou = None, thr
            for j, g in enumerate(regular):
                if j in taken:
                    continue
                v = _iou(d["bbox"], g["bbox"], False)
                if v >= best_iou:
                    best, best_iou = j, v
            if best is not None:
                taken.add(best)
                out.append((d["score"], cat, "tp"))
                continue
            hit = any(_iou(d["bbox"], g["bbox"], True) >= thr for g in crowd)
            out.append((d["score"], cat, "ignored" if hit else "fp"))
    return out, num_gt


def reference_counts(gt, dets, iou_thr, score_thrs):
    """{(score_thr, category_id): (tp, fp, fn)} for every category of gt."""
    outcomes, num_gt = reference_outcomes(gt, dets, iou_thr)
    counts = {}
    for s in score_thrs:
        for c in [c["id"] for c in gt["categories"]]:
            kept = [o for sc, cat, o in outcomes if cat == c and sc >= s]
            tp, fp = kept.count("tp"), kept.count("fp")
            counts[s, c] = (tp, fp, num_gt.get(c, 0) - tp)
    return counts


def ours(gt, dets, ious, engine="pycocotools"):
    coco_gt = load_ground_truth(gt, engine)
    dets = load_results(dets, coco_gt)
    cocoeval = run_cocoeval(coco_gt, results_to_coco(coco_gt, dets))
    if engine == "pycocotools":
        return match_from_cocoeval(cocoeval, ious)
    return match_detections(coco_gt, dets, ious)


def assert_same_counts(gt, dets, ious=(0.5, 0.75), scores=SCORES):
    """Both matchers give the reference's counts, and the same Matches as each other."""
    m = ours(gt, dets, ious)
    g = ours(gt, dets, ious, "faster")
    for name in ("scores", "labels", "tp", "fp", "num_gt", "image_ids", "det_ids", "gt_match",
                 "gt_ids", "gt_image_ids", "gt_labels", "gt_ignore"):
        assert np.array_equal(getattr(m, name), getattr(g, name)), name
    tp, fp, fn = counts_at(m, scores)
    for t, iou in enumerate(ious):
        ref = reference_counts(gt, dets, iou, scores)
        for j, s in enumerate(scores):
            for k, c in enumerate(m.category_ids):
                assert (tp[t, j, k], fp[t, j, k], fn[t, j, k]) == ref[s, c], (iou, s, c)
    return m


# ------------------------------------------------------------------------ crafted data
def test_crowd_region_absorbs_matches_without_tp_or_fn():
    gt, dets = scene(
        [(1, 1, (10, 10, 40, 40)), (1, 1, (60, 60, 100, 100), 1)],
        [(1, 1, (10, 10, 40, 40), 0.9),     # TP on the regular box
         (1, 1, (70, 70, 30, 30), 0.8),     # inside the crowd: ignored
         (1, 1, (100, 100, 40, 40), 0.6),   # inside the crowd too: crowd absorbs several
         (1, 1, (11, 11, 40, 40), 0.55)])   # duplicate of the TP, not in the crowd: FP
    m = assert_same_counts(gt, dets)
    tp, fp, fn = counts_at(m, [0.5])
    assert (tp[0, 0, 0], fp[0, 0, 0], fn[0, 0, 0]) == (1, 1, 0)
    assert m.ignored[0].sum() == 2 and m.num_gt[0] == 1


def test_regular_gt_preferred_over_crowd():
    # a detection overlapping both a regular box and a crowd region goes to the regular box
    gt, dets = scene([(1, 1, (0, 0, 50, 50)), (1, 1, (0, 0, 100, 100), 1)],
                     [(1, 1, (0, 0, 50, 50), 0.9), (1, 1, (0, 0, 50, 50), 0.8)])
    m = assert_same_counts(gt, dets)
    assert m.tp[0].tolist() == [True, False] and m.ignored[0].tolist() == [False, True]


def test_class_without_gt_and_class_without_detections_and_empty_image():
    gt, dets = scene(
        [(1, 1, (10, 10, 40, 40)), (1, 2, (50, 50, 30, 30)), (2, 2, (5, 5, 20, 20))],
        [(1, 1, (10, 10, 40, 40), 0.9),
         (1, 3, (10, 10, 40, 40), 0.8), (2, 3, (0, 0, 10, 10), 0.4),  # class 3: no GT
         (3, 1, (0, 0, 30, 30), 0.7)],                                  # image 3: no GT
        num_classes=3)
    m = assert_same_counts(gt, dets)
    tp, fp, fn = counts_at(m, [0.05])
    assert tp[0, 0].tolist() == [1, 0, 0]
    assert fp[0, 0].tolist() == [1, 0, 2]
    assert fn[0, 0].tolist() == [0, 2, 0]      # class 2 has GT but no detections
    p, r, f1 = ratios(tp[0, 0], fp[0, 0], fn[0, 0])
    assert p.tolist() == [0.5, 0.0, 0.0] and r.tolist() == [1.0, 0.0, 0.0]


def test_duplicates_and_score_ties():
    gt, dets = scene(
        [(1, 1, (10, 10, 40, 40)), (1, 1, (100, 100, 40, 40))],
        [(1, 1, (10, 10, 40, 40), 0.5), (1, 1, (10, 10, 40, 40), 0.5),   # tied duplicates
         (1, 1, (12, 10, 40, 40), 0.5), (1, 1, (100, 100, 40, 40), 0.3),
         (1, 1, (100, 100, 40, 40), 0.3)])
    m = assert_same_counts(gt, dets, scores=[0.3, 0.5, 0.50001])
    tp, fp, fn = counts_at(m, [0.5])  # a score equal to the threshold counts
    assert (tp[0, 0, 0], fp[0, 0, 0], fn[0, 0, 0]) == (1, 2, 1)
    c = curve(m, 0.5, 0)
    assert c.scores.tolist() == [0.5, 0.3]  # one point per tie run
    assert c.tp.tolist() == [1, 2] and c.fp.tolist() == [2, 3]


def test_max_dets_is_per_image_and_class():
    boxes = [(i % 15 * 12, i // 15 * 12, 10, 10) for i in range(150)]
    anns = [(1, 1, b) for b in boxes[::3]] + [(1, 2, b) for b in boxes[:60]]
    dets = [(1, 1, b, 0.99 - i * 0.005) for i, b in enumerate(boxes)]       # 150 of class 1
    dets += [(1, 2, b, 0.6 - i * 0.001) for i, b in enumerate(boxes[:90])]  # 90 of class 2
    gt, results = scene(anns, dets, num_images=1, num_classes=2)
    m = assert_same_counts(gt, results, scores=[0.0, 0.5])
    tp, fp, _ = counts_at(m, [0.0])
    assert tp[0, 0, 0] + fp[0, 0, 0] == 100   # class 1: only its 100 best count
    assert tp[0, 0, 1] + fp[0, 0, 1] == 90    # class 2: all 90, though the image has 240
    assert tp[0, 0, 0] == 34                  # GT at every 3rd box among the first 100


def test_iou_threshold_outside_cocoeval_grid():
    gt, dets = make_coco_pair(num_images=12, dets_per_image=30, num_classes=4, seed=3)
    assert_same_counts(gt, dets, ious=(0.3, 0.5, 0.62))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_with_crowd(seed):
    gt, dets = make_coco_pair(num_images=15, dets_per_image=40, num_classes=5,
                              crowd_fraction=0.15, seed=seed)
    assert_same_counts(gt, dets)


def test_best_f1_is_the_max_over_all_score_thresholds():
    gt, dets = make_coco_pair(num_images=15, dets_per_image=40, num_classes=3, seed=5)
    m = ours(gt, dets, [0.5])
    for k, c in enumerate(m.category_ids):
        best = best_f1(m, 0.5, k)
        candidates = sorted({d["score"] for d in dets if d["category_id"] == c}, reverse=True)
        ref = reference_counts(gt, dets, 0.5, candidates)
        f1s = [2 * ref[s, c][0] / (2 * ref[s, c][0] + ref[s, c][1] + ref[s, c][2])
               for s in candidates]
        i = int(np.argmax(f1s))  # first = highest score on ties
        assert best["f1"] == pytest.approx(f1s[i])
        assert best["score"] == candidates[i]
        assert (best["tp"], best["fp"], best["fn"]) == ref[candidates[i], c]


def test_empty_results_and_no_positive_f1():
    gt, _ = scene([(1, 1, (10, 10, 40, 40))], [])
    m = ours(gt, [], [0.5, 0.75])
    tp, fp, fn = counts_at(m, SCORES)
    assert tp.sum() == 0 and fp.sum() == 0 and fn[:, :, 0].tolist() == [[1] * 4] * 2
    assert best_f1(m, 0.5, 0) == {"score": None, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                  "tp": 0, "fp": 0, "fn": 1}
    assert len(curve(m, 0.5).scores) == 0


def test_matches_are_sorted_and_unknown_iou_is_named():
    gt, dets = make_coco_pair(num_images=5, dets_per_image=20, num_classes=3, seed=1)
    m = ours(gt, dets, [0.5])
    assert np.all(np.diff(m.scores) <= 0)
    with pytest.raises(KeyError, match="0.75"):
        curve(m, 0.75)


def test_each_detection_and_gt_is_located():
    gt, dets = make_coco_pair(num_images=8, dets_per_image=20, num_classes=3,
                              crowd_fraction=0.1, seed=8)
    coco_gt = load_ground_truth(gt, "pycocotools")
    cocoeval = run_cocoeval(coco_gt, results_to_coco(coco_gt, load_results(dets, coco_gt)))
    m = match_from_cocoeval(cocoeval, [0.5, 0.62])
    # det_ids are loadRes ids: 1 + the entry's index in the results list
    for d in range(len(m.scores)):
        entry = dets[m.det_ids[d] - 1]
        assert entry["image_id"] == m.image_ids[d] and entry["score"] == m.scores[d]
        assert m.category_ids[m.labels[d]] == entry["category_id"]
    anns = {a["id"]: a for a in gt["annotations"]}
    assert sorted(m.gt_ids.tolist()) == sorted(anns)
    for g, ann_id in enumerate(m.gt_ids.tolist()):
        a = anns[ann_id]
        assert (m.gt_image_ids[g], m.category_ids[m.gt_labels[g]]) == (a["image_id"],
                                                                       a["category_id"])
        assert m.gt_ignore[g] == bool(a["iscrowd"])
    # a matched detection points at a GT of its image and class: regular for TP, crowd if ignored
    for t in range(2):
        hit = m.gt_match[t] >= 0
        assert np.array_equal(hit, m.tp[t] | m.ignored[t])
        g = m.gt_match[t][hit]
        assert np.array_equal(m.gt_image_ids[g], m.image_ids[hit])
        assert np.array_equal(m.gt_labels[g], m.labels[hit])
        assert np.array_equal(m.gt_ignore[g], m.ignored[t][hit])
        assert len(set(m.gt_match[t][m.tp[t]].tolist())) == m.tp[t].sum()  # one TP per GT


def test_repeated_gt_ids_are_refused():
    gt, dets = scene([(1, 1, (10, 10, 40, 40)), (2, 1, (10, 10, 40, 40))],
                     [(1, 1, (10, 10, 40, 40), 0.9)])
    coco_gt = load_ground_truth(gt, "pycocotools")
    coco_gt.dataset["annotations"][1]["id"] = 1  # behind load_ground_truth's back
    coco_gt.createIndex()
    cocoeval = run_cocoeval(coco_gt, results_to_coco(coco_gt, load_results(dets, coco_gt)))
    with pytest.raises(ValueError, match="annotation ids repeat"):
        match_from_cocoeval(cocoeval, [0.5])


def test_faster_cocoeval_has_no_evalimgs_to_read():
    gt, dets = scene([(1, 1, (10, 10, 40, 40))], [(1, 1, (10, 10, 40, 40), 0.9)])
    coco_gt = load_ground_truth(gt, "faster")
    cocoeval = run_cocoeval(coco_gt, results_to_coco(coco_gt, load_results(dets, coco_gt)))
    with pytest.raises(ValueError, match="greedy.match_detections"):
        match_from_cocoeval(cocoeval, [0.5])


@pytest.mark.parametrize("engine", ENGINES)
def test_best_f1_under_both_engines(engine):
    gt, dets = make_coco_pair(num_images=10, dets_per_image=30, num_classes=3, seed=9)
    assert [best_f1(ours(gt, dets, [0.5], engine), 0.5, k) for k in range(3)] == \
        [best_f1(ours(gt, dets, [0.5]), 0.5, k) for k in range(3)]
