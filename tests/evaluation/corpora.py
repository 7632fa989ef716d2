"""The corpora the evaluation tests run both COCOeval engines, both matchers and TIDE on: each has
a case COCOeval treats specially (imported by tests/evaluation as `from corpora import ...`)."""
from cli_harness import HAND_ANNS, HAND_DETS, coco_scene
from gn_det.evaluation.synthetic import make_coco_pair


def eval_corpora():
    """{name: (COCO ground truth dict, results list)}: the evaluation tests' corpora, each with a
    case COCOeval treats specially (tests/evaluation: both engines, the matchers, TIDE)."""
    corpora = {"hand counted": coco_scene(HAND_ANNS, HAND_DETS, num_images=5)}
    # crowd regions, a class without GT (3), an image without GT (3), duplicates, score ties,
    # 120 detections of one class in one image (maxDets), a GT whose area is beyond COCO's range
    anns = [(1, 1, (10, 10, 40, 40)), (1, 1, (100, 100, 150, 150), 1), (1, 2, (5, 5, 20, 20)),
            (2, 2, (50, 50, 140, 120)), (2, 1, (0, 0, 8, 8))]
    dets = [(1, 1, (10, 10, 40, 40), 0.9), (1, 1, (10, 10, 40, 40), 0.9),
            (1, 1, (120, 120, 30, 30), 0.8), (1, 3, (10, 10, 40, 40), 0.7),
            (3, 1, (0, 0, 30, 30), 0.6), (2, 2, (55, 50, 140, 120), 0.5),
            (2, 1, (0, 0, 9, 8), 0.5)]
    dets += [(2, 2, (i, i, 100, 60), round(0.4 - i * 0.001, 4)) for i in range(120)]
    gt, results = coco_scene(anns, dets, num_images=3)
    gt["annotations"][2]["area"] = 2e10  # COCO ignores it in every area range
    corpora["crowd, empty class and image, maxDets"] = (gt, results)
    # IoUs exactly at the thresholds (0.5, 0.75) and tied scores across classes and images
    anns = [(1, 1, (0, 0, 10, 10)), (1, 2, (0, 0, 100, 100)), (2, 1, (20, 20, 40, 40)),
            (2, 2, (0, 0, 100, 100))]
    dets = [(1, 1, (0, 0, 10, 20), 0.5), (1, 1, (0, 0, 10, 5), 0.5),
            (1, 2, (0, 0, 100, 75), 0.5), (1, 2, (0, 0, 75, 100), 0.5),
            (2, 1, (20, 20, 40, 80), 0.5), (2, 2, (0, 0, 100, 75), 0.3),
            (2, 1, (0, 0, 100, 50), 0.3), (2, 2, (20, 20, 40, 40), 0.5)]
    corpora["IoU and score ties at the thresholds"] = coco_scene(anns, dets, num_images=2,
                                                                  num_classes=2)
    boxes = [(i % 15 * 12, i // 15 * 12, 10, 10) for i in range(150)]
    corpora["maxDets per image and class"] = coco_scene(
        [(1, 1, b) for b in boxes[::3]] + [(1, 2, b) for b in boxes[:60]],
        [(1, 1, b, round(0.99 - i * 0.005, 4)) for i, b in enumerate(boxes)]
        + [(1, 2, b, round(0.6 - i * 0.001, 4)) for i, b in enumerate(boxes[:90])],
        num_images=1, num_classes=2)
    for seed in (0, 1):
        corpora[f"synthetic seed {seed}"] = make_coco_pair(
            num_images=25, dets_per_image=40, num_classes=6, crowd_fraction=0.08, seed=seed)
    corpora["no detections"] = (corpora["synthetic seed 0"][0], [])
    return corpora
