"""gn_det.evaluation.engine: faster-coco-eval and pycocotools give the same 12 stats, per-class AP,
matches, P/R, confusion matrix, TIDE breakdown and thresholds on every corpus; the vectorized
matcher agrees with faster-coco-eval's own matched pairs; importing the evaluation loads no
torch, detectron2 or OpenCV; faster-coco-eval's needs (integer image ids) are named in one
line; every bad input of the evaluation ends in the same one line under both engines."""
import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster

from cli_harness import Case, Inputs, root_logs_to_stderr, run_case, write
from corpora import eval_corpora
from gn_det.evaluation.coco_stats import STAT_NAMES, coco_stats, per_class_ap
from gn_det.evaluation.engine import ENGINES, check_engine, coco_classes, engine_of
from gn_det.evaluation.greedy import match_detections
from gn_det.evaluation.metrics import evaluate_detections
from gn_det.evaluation.results import GroundTruthError, load_ground_truth, load_results
from helpers import REPO

CORPORA = eval_corpora()
MATCH_FIELDS = ("scores", "labels", "tp", "fp", "num_gt", "image_ids", "det_ids", "gt_match",
                "gt_ids", "gt_image_ids", "gt_labels", "gt_ignore")


def evaluate(name, engine, **kw):
    gt, dets = CORPORA[name]
    coco = load_ground_truth(gt, engine)
    return evaluate_detections(coco, load_results(dets, coco), (0.5, 0.75, 0.62), **kw)


@pytest.fixture(scope="module", params=sorted(CORPORA))
def both(request):
    return {engine: evaluate(request.param, engine) for engine in ENGINES}


def test_12_stats_and_per_class_ap_equal(both):
    ref, ours = (both[e].cocoeval for e in ("pycocotools", "faster"))
    a, b = coco_stats(ref), coco_stats(ours)
    for name in STAT_NAMES:
        assert (a[name] is None) == (b[name] is None), name
        if a[name] is not None:
            assert b[name] == pytest.approx(a[name], abs=1e-6), name
    for cat, ap in per_class_ap(ref).items():
        other = per_class_ap(ours)[cat]
        assert (ap is None and other is None) or other == pytest.approx(ap, abs=1e-6), cat


def test_matches_and_every_derived_number_equal(both):
    ref, ours = both["pycocotools"], both["faster"]
    for name in MATCH_FIELDS:
        assert np.array_equal(getattr(ref.matches, name), getattr(ours.matches, name)), name
    assert np.array_equal(ref.matches.boxes, ours.matches.boxes)
    for key in ("pr", "best_f1", "best_f1_overall", "confusion", "tide", "thresholds"):
        assert ref.metrics[key] == ours.metrics[key], key


@pytest.mark.parametrize("iou", [0.5, 0.75])
@pytest.mark.parametrize("name", sorted(CORPORA))
def test_greedy_matches_are_faster_coco_evals_own(name, iou):
    """With one IoU threshold and area range "all", faster-coco-eval's eval["matched"] is
    exactly its matching: the greedy matcher pairs the same detections with the same GT."""
    gt, dets = CORPORA[name]
    coco = load_ground_truth(gt, "faster")
    dets = load_results(dets, coco)
    m = match_detections(coco, dets, [iou])
    ours = {(int(d), int(m.gt_ids[g])) for d, g in zip(m.det_ids, m.gt_match[0]) if g >= 0}
    with contextlib.redirect_stdout(io.StringIO()):
        f_gt = FasterCOCO(json.loads(json.dumps(gt)))
        f_dt = f_gt.loadRes(json.loads(json.dumps(dets))) if dets else None
    if f_dt is None:
        assert not ours
        return
    e = COCOeval_faster(f_gt, f_dt, "bbox", print_function=lambda *a: None)
    e.params.iouThrs = np.array([iou])
    e.params.areaRng, e.params.areaRngLbl = [[0, 1e10]], ["all"]
    e.params.maxDets = [100]
    e.evaluate()
    theirs = {tuple(int(v) for v in key.split("_")) for key in e.eval["matched"]}
    assert ours == theirs


def test_engine_names_and_objects():
    assert check_engine("faster") == "faster"
    with pytest.raises(ValueError, match="valid: faster, pycocotools"):
        check_engine("fast")
    for engine in ENGINES:
        coco_cls, _ = coco_classes(engine)
        assert engine_of(coco_cls()) == engine


def test_faster_engine_refuses_string_image_ids_in_one_line():
    gt, dets = CORPORA["hand counted"]
    gt = json.loads(json.dumps(gt))
    gt["images"][0]["id"] = "one"
    for a in gt["annotations"]:
        a["image_id"] = "one" if a["image_id"] == 1 else a["image_id"]
    with pytest.raises(GroundTruthError, match="image id 'one' is not an integer; the "
                                               "faster-coco-eval engine needs integer"):
        load_ground_truth(gt, "faster")
    load_ground_truth(gt, "pycocotools")  # the reference takes any id


LIGHT = ("torch", "detectron2", "cv2", "matplotlib")


def _fresh(code: str) -> set:
    """The heavy modules a fresh interpreter has loaded after `code`."""
    probe = code + f"\nimport sys\nprint(sorted(m for m in {LIGHT!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=REPO, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')))


def test_importing_the_evaluation_loads_no_torch_detectron2_cv2_or_matplotlib():
    assert _fresh("import gn_det.evaluation") == set()
    # scoring itself (the faster engine included) loads none of them either
    assert _fresh("import json\n"
                  "from gn_det.evaluation import evaluate_detections, load_ground_truth, "
                  "load_results\n"
                  "from gn_det.evaluation.synthetic import make_coco_pair\n"
                  "gt, dets = make_coco_pair(num_images=3, num_classes=2)\n"
                  "coco = load_ground_truth(gt)\n"
                  "evaluate_detections(coco, load_results(dets, coco))") == set()


def test_evaluate_tool_help_loads_no_torch():
    probe = ("import runpy, sys\nsys.argv = ['evaluate.py', '--help']\n"
             "try:\n    runpy.run_path('tools/evaluate.py', run_name='__main__')\n"
             "except SystemExit:\n    pass")
    assert _fresh(probe) == set()


def test_the_detectron2_evaluator_loads_on_first_use():
    loaded = _fresh("import gn_det.evaluation as e\nassert callable(e.build_pr_evaluator)")
    assert {"torch", "detectron2"} <= loaded


def test_cv2_stays_importable_after_the_engine_hid_it():
    out = subprocess.run([sys.executable, "-c",
                          "from gn_det.evaluation.engine import coco_classes\n"
                          "coco_classes('faster')\nimport sys\n"
                          "assert 'cv2' not in sys.modules\nimport cv2\nprint(cv2.__name__)"],
                         capture_output=True, text=True, cwd=REPO, timeout=120,
                         env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert out.returncode == 0 and out.stdout.strip() == "cv2", out.stderr


# ------------------------------------------------------------------------ bad input, both engines
def _bad_input_suite():
    """tests/tools/test_bad_inputs.py's evaluation cases (results files), loaded by path: that
    folder is not on sys.path here."""
    spec = importlib.util.spec_from_file_location(
        "bad_inputs_suite", REPO / "tests" / "tools" / "test_bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.results_cases()


def _gt_case(name, mutate, words):
    """tools/evaluate.py on a tiny val ground truth changed by `mutate` and a valid results list."""
    def build(inputs, tmp):
        gt = inputs.coco()
        a = gt["annotations"][0]
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                 "score": 0.9}]
        content = mutate(gt)
        return "evaluate", ["--gt", write(tmp / "gt.json", gt if content is None else content),
                            "--dt", write(tmp / "results.json", dets), "--out",
                            str(tmp / "eval"), "--no-plot"]
    return Case("results", name, "error", words, build)


GT_CASES = [
    _gt_case("ground truth not JSON", lambda g: "{", "not valid JSON"),
    _gt_case("ground truth without annotations", lambda g: g.pop("annotations") and None,
             "missing list 'annotations'"),
    _gt_case("annotation on an unknown image",
             lambda g: g["annotations"][0].update(image_id=999),
             "annotations: entry 0: 'image_id': is 999, not an id in 'images'"),
    _gt_case("annotation box of 3 numbers", lambda g: g["annotations"][0].update(bbox=[1, 2, 3]),
             "'bbox': is [1, 2, 3]; expected 4 finite numbers"),
    _gt_case("image id twice", lambda g: g["images"].append(dict(g["images"][0])),
             "appears twice"),
    _gt_case("category without an integer id", lambda g: g["categories"][0].update(id="a"),
             "a category needs an integer 'id'"),
]
BAD_CASES = _bad_input_suite() + GT_CASES


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return Inputs(tmp_path_factory.mktemp("bad_inputs_engines"))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", BAD_CASES, ids=[c.name for c in BAD_CASES])
def test_bad_input_ends_the_same_under_both_engines(case, engine, inputs, tmp_path,
                                                    monkeypatch):
    """Every evaluation case of the bad-input suite (and bad ground truth) ends as it expects
    (one `evaluate.py: error:` line with its words, or the warning) under each engine."""
    monkeypatch.delenv("GN_DET_DEBUG", raising=False)

    def build(inputs, tmp):
        cli, argv = case.build(inputs, tmp)
        return cli, argv + ["--engine", engine]

    with root_logs_to_stderr():
        outcome = run_case(dataclasses.replace(case, build=build), inputs, tmp_path,
                           in_process=True)
    assert not outcome.problem, f"ended {outcome.code}: {outcome.line}"
    assert outcome.code == (2 if case.expect == "error" else 0)
