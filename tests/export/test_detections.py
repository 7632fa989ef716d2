"""gn_det.export.detections: exported detections are matched to eager ones per detection, never
by index, within the tolerance; a detection only one side kept passes only at a cut-off (one
threshold, or one per class); a reduced-precision tolerance allows a share of changed ones."""
import numpy as np
import pytest

from gn_det import export


def dets(boxes, scores, classes):
    return export.Detections(np.asarray(boxes, float), np.asarray(scores, float),
                             np.asarray(classes))


def test_matching_pairs_detections_not_indices():
    ref = dets([[0, 0, 10, 10], [20, 20, 60, 50], [5, 5, 15, 15]], [0.9, 0.8, 0.3], [0, 1, 0])
    tol = export.Tolerance(box_atol=1e-4, box_rtol=1e-5, score_atol=1e-5)
    swapped = dets([[5, 5, 15, 15], [0, 0, 10, 10.00009], [20, 20, 60, 50]], [0.3, 0.9, 0.8],
                   [0, 0, 1])
    cmp = export.match_detections(ref, swapped, tol)
    assert cmp.ok and cmp.matched == 3 and cmp.max_box_diff == pytest.approx(9e-5)
    # 40 px box: 1e-4 + 4e-4 allowed; a 6e-4 shift is over it, a 4e-4 one is not
    for shift, ok in ((4e-4, True), (6e-4, False)):
        moved = dets([[0, 0, 10, 10], [20, 20, 60 + shift, 50], [5, 5, 15, 15]],
                     [0.9, 0.8, 0.3], [0, 1, 0])
        assert export.match_detections(ref, moved, tol).ok is ok, shift
    other_class = dets(ref.boxes, ref.scores, [0, 2, 0])
    cmp = export.match_detections(ref, other_class, tol)
    assert not cmp.ok and cmp.matched == 2 and len(cmp.unmatched) == 2
    score = dets(ref.boxes, [0.9, 0.8, 0.3001], ref.classes)
    assert "a score differs by 0.0001" in export.match_detections(ref, score, tol).unmatched[0]


def test_matching_lets_cut_offs_decide_only_at_their_edge():
    """A detection only one side kept passes when its score sits at the score threshold, or at
    the other side's lowest score while that side is full; anywhere else it fails."""
    tol = export.Tolerance()
    ref = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.050001], [0, 0])
    one = dets([[0, 0, 10, 10]], [0.9], [0])
    assert export.match_detections(ref, one, tol, score_thresh=0.05).ok
    assert not export.match_detections(ref, one, tol, score_thresh=0.01).ok
    full = dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.4], [0, 1])
    extra = dets([[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]], [0.9, 0.4, 0.399999],
                 [0, 1, 2])
    assert export.match_detections(full, extra, tol, max_detections=2).ok
    assert not export.match_detections(full, extra, tol, max_detections=3).ok


def test_per_class_cut_offs_explain_a_detection_only_at_its_class_threshold():
    tol = export.Tolerance()
    ref = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5], [0, 1])
    one = dets([[0, 0, 10, 10]], [0.9], [0])
    assert export.match_detections(ref, one, tol, score_thresh=np.array([0.05, 0.5])).ok
    assert not export.match_detections(ref, one, tol, score_thresh=np.array([0.5, 0.05])).ok


def test_a_changed_share_allows_that_many_changed_detections_and_no_more():
    """bf16's allowance: pairs beyond the tolerance and unexplained one-sided detections count
    as changed; the check passes while they are at most changed_share of the detections."""
    boxes = [[10 * i, 0, 10 * i + 8, 8] for i in range(10)]
    ref = dets(boxes, [0.9 - 0.05 * i for i in range(10)], [0] * 10)
    moved = dets([b[:2] + [b[2] + (3 if i < 2 else 0.01), b[3]] for i, b in enumerate(boxes)],
                 ref.scores, ref.classes)  # two boxes 3 px off, the rest within 0.5 px
    tol = export.Tolerance(box_atol=0.5, box_rtol=0.0, score_atol=0.01, changed_share=0.2)
    cmp = export.match_detections(ref, moved, tol)
    assert cmp.ok and (cmp.changed, cmp.allowed_changed, cmp.matched) == (2, 2, 10)
    assert cmp.max_box_diff == pytest.approx(3) and cmp.max_box_excess <= 1
    assert "2 changed beyond the tolerance (up to 2 allowed)" in cmp.describe()
    dropped = dets(moved.boxes[:9], moved.scores[:9], moved.classes[:9])  # and one kept no more
    cmp = export.match_detections(ref, dropped, tol)
    assert not cmp.ok and cmp.changed == 3 and len(cmp.unmatched) == 1
    assert not export.match_detections(ref, moved, export.Tolerance(0.5, 0.0, 0.01)).ok


def test_detections_read_the_graphs_outputs_by_name():
    """The exported graph's flat outputs (boxes, classes, scores, image_size) become Detections
    whatever order the caller would guess."""
    outputs = [np.array([[1, 2, 3, 4]], np.float32), np.array([7]), np.array([0.5], np.float32),
               np.array([64, 64])]
    got = export.Detections.from_outputs(outputs)
    assert got.boxes.tolist() == [[1, 2, 3, 4]] and got.classes.tolist() == [7]
    assert got.scores.tolist() == [0.5] and len(got) == 1
