"""gn_det.evaluation.plots: pr_curves.png for one run, several runs, and many classes; the
P/R/F1-against-score PNGs and confusion_matrix.png."""
import matplotlib.image as mpimg
import pytest

from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.plots import plot_confusion_matrix, plot_pr_curves, plot_score_curves
from gn_det.evaluation.results import load_ground_truth, load_results
from gn_det.evaluation.synthetic import make_coco_pair


def evaluation(num_classes, dets_every=1, seed=0):
    gt, dets = make_coco_pair(num_images=6, dets_per_image=20, num_classes=num_classes, seed=seed)
    coco = load_ground_truth(gt)
    return evaluate_detections(coco, load_results(dets[::dets_every], coco))


@pytest.mark.parametrize("runs, classes, panels", [(1, 3, 48), (2, 3, 48), (1, 12, 5)])
def test_writes_a_png(tmp_path, runs, classes, panels):
    evs = {f"run{i}": evaluation(classes, dets_every=i + 1) for i in range(runs)}
    path = plot_pr_curves(evs, str(tmp_path / "pr.png"), max_class_panels=panels)
    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 600


def test_handles_empty_results(tmp_path):
    gt, _ = make_coco_pair(num_images=3, num_classes=2)
    coco = load_ground_truth(gt)
    ev = evaluate_detections(coco, load_results([], coco))
    assert mpimg.imread(plot_pr_curves({"empty": ev}, str(tmp_path / "pr.png"))).size


@pytest.mark.parametrize("classes", [3, 15])
def test_score_curves_and_confusion_matrix_pngs(tmp_path, classes):
    ev = evaluation(classes)
    paths = plot_score_curves(ev, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["p_curve.png", "r_curve.png", "f1_curve.png"]
    for p in paths:
        assert mpimg.imread(p).shape[:2] == (560, 800)  # 8 x 5.6 in at 100 dpi
    img = mpimg.imread(plot_confusion_matrix(ev.confusion, str(tmp_path / "cm.png")))
    side = max(4.5, 0.36 * (classes + 1) + 2.5)
    dpi = 100 if classes + 1 <= 12 else 85
    assert img.shape[:2] == (round(dpi * (side + 1.2)), round(dpi * (2 * side + 1.0)))


def test_confusion_matrix_png_without_detections(tmp_path):
    gt, _ = make_coco_pair(num_images=3, num_classes=2)
    coco = load_ground_truth(gt)
    ev = evaluate_detections(coco, load_results([], coco))
    assert mpimg.imread(plot_confusion_matrix(ev.confusion, str(tmp_path / "cm.png"))).size
    assert len(plot_score_curves(ev, str(tmp_path))) == 3
