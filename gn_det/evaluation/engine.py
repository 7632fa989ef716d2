"""The COCOeval engine: faster-coco-eval (default, C++) or pycocotools (the reference), chosen by
name, each imported only when an evaluation runs.

Both give the same 12 stats (tested to 1e-6) from the same validated input. What differs is
speed, and what each exposes: pycocotools keeps its per-image matches (`evalImgs`), which
gn_det.evaluation.matching reads; faster-coco-eval keeps them inside C++ (its `eval["matched"]`
is the union over every IoU threshold and area range), so for it the matches come from
gn_det.evaluation.greedy, the same COCO rule run on every IoU threshold asked for.

faster-coco-eval's mask module imports OpenCV, which it needs only for boundary IoU; it is
imported here with OpenCV hidden (when not already loaded), so scoring boxes or masks never
loads cv2 (17 MB and a quarter second).
"""
import contextlib
import copy
import io
import itertools
import logging
import sys
from typing import Callable, Dict, List, Optional

import numpy as np

logger = logging.getLogger(__name__)

ENGINES = ("faster", "pycocotools")
DEFAULT_ENGINE = "faster"


def check_engine(engine: str) -> str:
    """`engine` if it is one of ENGINES, else ValueError naming the valid ones."""
    if engine not in ENGINES:
        raise ValueError(f"evaluation engine {engine!r} is unknown; valid: {', '.join(ENGINES)}")
    return engine


@contextlib.contextmanager
def _without_cv2():
    """While in the block, `import cv2` fails (unless cv2 is already loaded): faster-coco-eval
    then leaves its optional boundary-IoU helper unset."""
    if "cv2" in sys.modules:
        yield
        return
    sys.modules["cv2"] = None  # type: ignore[assignment]  (import cv2 raises ImportError)
    try:
        yield
    finally:
        if sys.modules.get("cv2", 0) is None:
            del sys.modules["cv2"]


def coco_classes(engine: str):
    """(COCO, COCOeval) classes of `engine`."""
    if check_engine(engine) == "faster":
        with _without_cv2():
            from faster_coco_eval import COCO, COCOeval_faster
        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    return COCO, COCOeval


def engine_of(coco) -> str:
    """The engine whose COCO class `coco` is."""
    return "faster" if type(coco).__module__.startswith("faster_coco_eval") else "pycocotools"


def make_coco(dataset: Dict, engine: str):
    """`engine`'s COCO object indexing `dataset` (a COCO dict, not copied), quietly."""
    coco_cls, _ = coco_classes(engine)
    coco = coco_cls()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def results_coco(coco_gt, detections: List[Dict], iou_type: str = "bbox"):
    """The results COCO of validated `detections` (their dicts get `id` 1..N, `area` and
    `iscrowd`, as COCO.loadRes gives them), in `coco_gt`'s engine. Box results skip loadRes's
    polygon copy of each box, which box IoU never reads (~150 MB at 500,000 detections); an empty
    list gives an empty results COCO (which loadRes refuses)."""
    engine = engine_of(coco_gt)
    base = {"images": list(coco_gt.dataset["images"]),
            "categories": list(coco_gt.dataset["categories"])}
    if iou_type == "bbox" or not detections:
        for i, d in enumerate(detections):
            d["id"], d["area"], d["iscrowd"] = i + 1, d["bbox"][2] * d["bbox"][3], 0
        return make_coco(dict(base, annotations=detections), engine)
    anns = [dict(d) for d in detections]
    for a in anns:
        a.pop("bbox", None)  # masks are what "segm" scores
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes(anns)


def new_cocoeval(coco_gt, coco_dt, iou_type: str = "bbox", img_ids=None):
    """A COCOeval of `coco_gt`'s engine with the default parameters (maxDets 1/10/100, IoU
    .50:.05:.95, all four area ranges), nothing evaluated yet, printing nothing."""
    engine = engine_of(coco_gt)
    _, eval_cls = coco_classes(engine)
    if engine == "faster":
        cocoeval = eval_cls(coco_gt, coco_dt, iou_type, print_function=_silent)
    else:
        cocoeval = eval_cls(coco_gt, coco_dt, iou_type)
    if img_ids is not None:
        cocoeval.params.imgIds = list(img_ids)
    return cocoeval


def _silent(*args, **kwargs) -> None:
    """faster-coco-eval's print_function: its progress lines are replaced by gn_det's phases."""


def evaluate_and_accumulate(cocoeval, note: Optional[Callable[[str], object]] = None) -> None:
    """evaluate(), accumulate() and summarize() with pycocotools' printing silenced; `note(what)`
    is called before each step (for progress lines). faster-coco-eval's evaluation runs in
    class chunks (evaluate_faster_in_chunks) so that it can report between them."""
    with contextlib.redirect_stdout(io.StringIO()):
        if engine_of(cocoeval.cocoGt) == "faster" and cocoeval.params.useCats:
            evaluate_faster_in_chunks(cocoeval, note)
        else:
            if note:
                note("evaluate")
            cocoeval.evaluate()
            if note:
                note("accumulate")
            cocoeval.accumulate()
        cocoeval.summarize()


FASTER_CHUNKS = 8


def evaluate_faster_in_chunks(cocoeval, note: Optional[Callable[[str], object]] = None,
                              chunks: int = FASTER_CHUNKS) -> None:
    """COCOeval_faster.evaluate() + accumulate(), with its one C++ call (matching and
    accumulation of every class: ~5 s at COCO val size, more on a busy machine, with no output)
    split into `chunks` calls over disjoint sets of classes, `note` called after each. COCO's
    per-class precision and recall depend on that class's detections and GT only, so the arrays
    of the chunks, put side by side along the class axis, are those of one call (the 12 stats are
    tested equal to pycocotools'). Follows faster-coco-eval 1.8's evaluate(): its _prepare,
    computeIoU and C++ EvaluateAccumulate, on the same inputs."""
    with _without_cv2():
        import faster_coco_eval.faster_eval_api_cpp as _C

    p = cocoeval.params
    p.imgIds = list(np.unique(p.imgIds))
    p.catIds = list(np.unique(p.catIds))
    p.maxDets = sorted(p.maxDets)
    cocoeval._prepare()
    if note:
        note("indexed")
    pairs = cocoeval._nonempty_iou_pairs
    cocoeval.ious = {pair: cocoeval.computeIoU(*pair)
                     for pair in itertools.product(p.imgIds, p.catIds) if pair in pairs}
    if note:
        note("IoUs")
    cocoeval._paramsEval = copy.deepcopy(p)
    parts = []
    bounds = np.linspace(0, len(p.catIds), min(chunks, len(p.catIds)) + 1).round().astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = copy.copy(p)
        part.catIds = p.catIds[a:b]
        ious = [[cocoeval.ious.get((img, cat), []) for cat in part.catIds] for img in p.imgIds]
        parts.append(_C.COCOevalEvaluateAccumulate(part, ious, cocoeval.gt_dataset,
                                                   cocoeval.dt_dataset, p.imgIds, part.catIds,
                                                   True))
        if note:
            note(f"matched and accumulated classes {b}/{len(p.catIds)}")
    ev = dict(parts[0])
    ev["params"] = p
    ev["counts"] = list(parts[0]["counts"])
    ev["counts"][2] = len(p.catIds)
    for key, axis in (("precision", 2), ("scores", 2), ("recall", 1)):
        ev[key] = np.concatenate([part[key] for part in parts], axis=axis)
    ev["matched"] = {}
    for part in parts:
        ev["matched"].update(part["matched"])
    cocoeval.eval = ev
    cocoeval.matched = False
