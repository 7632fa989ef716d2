"""gn_det.evaluation.tables: every console table stays within 120 columns at 80 classes with long
names; the confusion matrix becomes a list of the top confusions when its table would not fit;
and the 80-class confusion_matrix.png stays within 3,000 px."""
import matplotlib.image as mpimg
import pytest

from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.plots import MAX_SIDE_PX, confusion_shown, plot_confusion_matrix
from gn_det.evaluation.results import load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair
from gn_det.evaluation.tables import (format_coco_table, format_comparison_table,
                                      format_confusion_table, format_pr_table, format_tide_table)


@pytest.fixture(scope="module")
def many():
    gt, dets = make_coco_pair(num_images=60, dets_per_image=60, num_classes=80, seed=1)
    for c in gt["categories"]:
        c["name"] = f"a rather long class name number {c['id']:02d}"
    coco = load_ground_truth(gt)
    return evaluate_detections(coco, load_results(dets, coco))


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_every_table_fits_120_columns(many):
    m = many.metrics
    for table in (format_coco_table({"a run with a long name": m, "another one": m}),
                  format_pr_table(m), format_comparison_table({"bn": m, "gn": m}),
                  format_confusion_table(many), format_tide_table(m)):
        assert widest(table) <= 120, table.splitlines()[0]


def test_many_classes_list_the_top_confusions(many):
    text = format_confusion_table(many)
    assert "too many classes for a table: confusion_matrix.csv has it all" in text
    cm = many.confusion.matrix
    k = len(many.class_names)
    off = {(many.class_names[r], many.class_names[c]): cm[r, c]
           for r in range(k) for c in range(k) if r != c and cm[r, c]}
    first = text.splitlines()[2]  # title, total, then the largest cell
    pair = tuple(first.split("GT ", 1)[1].split(":")[0].split(" -> predicted "))
    assert off[pair] == max(off.values()) and f": {max(off.values())} (" in first
    assert f"missed GT (no detection on it): {cm[:k, k].sum()}" in text


def test_few_classes_still_get_the_matrix():
    gt, dets = make_coco_pair(num_images=10, dets_per_image=20, num_classes=3, seed=2)
    coco = load_ground_truth(gt)
    ev = evaluate_detections(coco, load_results(dets, coco))
    assert "(rows: ground truth, columns: predicted)" in format_confusion_table(ev)


def test_80_class_confusion_png_is_small_and_keeps_every_count(many, tmp_path):
    labels, matrix = confusion_shown(many.confusion)
    assert len(labels) == 22 and labels[-2:] == ["other classes", "background"]
    assert matrix.sum() == many.confusion.matrix.sum()  # the rest is summed, not dropped
    img = mpimg.imread(plot_confusion_matrix(many.confusion, str(tmp_path / "cm.png")))
    assert max(img.shape[:2]) <= MAX_SIDE_PX
