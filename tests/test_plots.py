"""gn_det.evaluation.plots: pr_curves.png for one run, several runs, and many classes."""
import matplotlib.image as mpimg
import pytest

from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.plots import plot_pr_curves
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
