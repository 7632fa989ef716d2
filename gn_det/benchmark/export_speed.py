"""Inference per image of the exported GN+WS detector against eager PyTorch (tools/benchmark.py
export): eager GN-all (the reference), and GN+WS eager unfolded, eager folded, TorchScript,
ONNX Runtime and, on CPUs with bf16 matrix units, bf16 TorchScript (all from the folded model, as
gn_det.export writes them), for the RetinaNet R50-FPN presets at 512x768 and the toy R-18 at its
256 px.

All variants of a model live in this process and are called interleaved (timing.interleaved), so
the i-th samples of two variants ran side by side: every ratio is the median of the per-pair
ratios with a bootstrap interval (timing.paired_ratio). `callgrind` adds instruction counts of
eager folded vs eager GN-all (valgrind's callgrind through torch.utils.benchmark), which repeat
exactly where elapsed time does not.
"""
import copy
import dataclasses
import io
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence
from unittest import mock

import torch
from torch import nn
from torch.utils.benchmark import Timer

import detectron2.modeling.meta_arch.retinanet as retinanet
from detectron2.layers import CycleBatchNormList
from detectron2.modeling import build_model

from .. import export
from ..config import load_cfg
from ..engine.precision import cpu_bf16_flags, prepare_for_inference, resolve_precision
from ..model_zoo import NORM_PRESETS
from .timing import CLOCKS, interleaved, medians, paired_ratio

NORM_COMPONENTS = ("BACKBONE", "FPN", "RETINANET_HEAD")


class Model(NamedTuple):
    gn: tuple          # (config under configs/, opts): the GN-all reference
    gnws: tuple        # (config, opts): the GN+WS-all model
    size: tuple        # input H, W (the test size)
    quick_size: tuple
    description: str


def _norm_opts(ws: bool) -> tuple:
    opts = []
    for component in NORM_COMPONENTS:
        opts += [f"MODEL.NORMS.{component}.TYPE", "GN", f"MODEL.NORMS.{component}.WS", ws]
    return tuple(opts)


TOY_CONFIG = "toy/Base-RetinaNet-R18-Shapes.yaml"
MODELS: Dict[str, Model] = {
    "r50": Model((NORM_PRESETS["gn_all"].config, ()), (NORM_PRESETS["gnws_all"].config, ()),
                 (512, 768), (128, 192), "RetinaNet R50-FPN, gn_all / gnws_all presets"),
    "toy": Model((TOY_CONFIG, _norm_opts(False)), (TOY_CONFIG, _norm_opts(True)), (256, 256),
                 (64, 64), "toy RetinaNet R-18-FPN (configs/toy), GN / GN+WS everywhere"),
}
VARIANTS = ("eager_gn_all", "eager_gnws_unfolded", "eager_gnws_folded", "torchscript_gnws",
            "onnxruntime_gnws", "torchscript_bf16_gnws")  # the last where the CPU has bf16
# (label, variant, reference variant, target): ratios where lower is better.
RATIOS = (
    ("eager GN+WS unfolded / eager GN-all", "eager_gnws_unfolded", "eager_gn_all", None),
    ("eager GN+WS folded / eager GN-all", "eager_gnws_folded", "eager_gn_all", 1.00),
    ("TorchScript GN+WS / eager GN-all", "torchscript_gnws", "eager_gn_all", None),
    ("ONNX Runtime GN+WS / eager GN-all", "onnxruntime_gnws", "eager_gn_all", None),
    ("ONNX Runtime / eager folded", "onnxruntime_gnws", "eager_gnws_folded", 0.70),
    ("TorchScript / eager folded", "torchscript_gnws", "eager_gnws_folded", None),
    ("TorchScript bf16 / eager folded (fp32)", "torchscript_bf16_gnws", "eager_gnws_folded",
     0.20),
    ("TorchScript bf16 / eager GN+WS unfolded (fp32)", "torchscript_bf16_gnws",
     "eager_gnws_unfolded", None),
)


def build_models(config_dir: str, model: Model, size: Sequence[int]):
    """(GN-all model, GN+WS model, cfg of the latter), random init (seed 0), eval mode, CPU, at
    test size `size`."""
    common = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", min(size),
              "INPUT.MAX_SIZE_TEST", max(size)]
    built = []
    for config, opts in (model.gn, model.gnws):
        cfg = load_cfg(os.path.join(config_dir, config), [*common, *opts])
        torch.manual_seed(0)
        built.append((cfg, build_model(cfg).eval()))
    return built[0][1], built[1][1], built[1][0]


def ort_session(onnx_bytes: bytes, threads: int):
    """An ONNX Runtime CPU session with as many intra-op threads as torch uses, and no spinning
    threads (they would burn the cores the interleaved torch calls need)."""
    import onnxruntime as ort  # optional (the [export] extra): only this variant needs it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def make_variants(gn_model, gnws_model, cfg, image) -> Dict[str, Callable[[], object]]:
    """One zero-argument inference call per variant on `image`, and a check that the exported
    ones give eager folded's detections (else the timing would compare different work); the bf16
    TorchScript, made only where the CPU has bf16 units, is checked against the eager model in
    bf16 (random weights tie many scores: against float32, NMS keeps other boxes)."""
    folded, _ = export.fold_for_export(gnws_model)
    # GN-all holds the folded weights: the same network computing the same detections, so the
    # folded / GN-all ratio measures only what folding leaves behind. With independent random
    # weights the two keep different numbers of candidate boxes (1 vs 10 above the score
    # threshold here), and postprocessing those differences dominated the ratio.
    gn_model.load_state_dict(folded.state_dict(), strict=True)
    traced = export.trace(folded, image)
    buf = io.BytesIO()
    export.write_onnx(traced, image, buf)
    session = ort_session(buf.getvalue(), torch.get_num_threads())
    inputs = [{"image": image}]

    def eager(model):
        def call():
            with torch.no_grad():
                return model(inputs)
        return call

    def torchscript():
        with torch.no_grad():
            return traced(image)

    def onnxruntime():
        return session.run(None, {export.INPUT_NAME: image.numpy()})

    sample = export.Sample("benchmark", image, *image.shape[1:])
    ref = export.eager_detections(gnws_model, sample)
    checks = [("TorchScript", torchscript, ref, export.DEFAULT_TOLERANCE),
              ("ONNX Runtime", onnxruntime, ref, export.DEFAULT_TOLERANCE)]
    variants = {"eager_gn_all": eager(gn_model), "eager_gnws_unfolded": eager(gnws_model),
                "eager_gnws_folded": eager(folded), "torchscript_gnws": torchscript,
                "onnxruntime_gnws": onnxruntime}
    if cpu_bf16_flags():
        bf16 = export.trace_bf16(folded, image)

        def torchscript_bf16():
            with torch.no_grad():
                return bf16(image)

        prepared = prepare_for_inference(copy.deepcopy(folded), resolve_precision("bf16"))
        checks.append(("TorchScript bf16", torchscript_bf16,
                       export.eager_detections(prepared, sample),
                       export.SAME_PRECISION_TOLERANCE))
        variants["torchscript_bf16_gnws"] = torchscript_bf16
    else:
        print("export: no bf16 TorchScript variant: this CPU has no bf16 matrix units",
              flush=True)
    for name, call, expected, tolerance in checks:
        got = export.Detections.from_outputs([o.numpy() if hasattr(o, "numpy") else o
                                              for o in call()])
        cmp = export.match_detections(expected, got, tolerance,
                                      cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
                                      cfg.TEST.DETECTIONS_PER_IMAGE)
        if not cmp.ok:
            raise RuntimeError(f"export benchmark: {name} differs from eager: {cmp.describe()}")
    return variants


def time_model(name: str, model: Model, config_dir: str, repeats: int, quick: bool,
               size: Optional[Sequence[int]], clock: str) -> Dict:
    """Seconds per image of each variant of one model, interleaved, and the RATIOS with their
    intervals."""
    size = tuple(size or (model.quick_size if quick else model.size))
    t0 = time.perf_counter()
    gn, gnws, cfg = build_models(config_dir, model, size)
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(1)) * 255
    variants = make_variants(gn, gnws, cfg, image)
    print(f"export {name}: {model.description} at {size[0]}x{size[1]}: built, traced, exported "
          f"and checked in {time.perf_counter() - t0:.0f}s; timing {len(variants)} variants x "
          f"{repeats} repeats ({clock} clock)", flush=True)
    samples = interleaved(variants, repeats, warmup=2, label=f"export {name} ",
                          clock=CLOCKS[clock], every=max(1, repeats // 10))
    med = medians(samples)
    ratios = {}
    for label, a, b, target in RATIOS:
        if a not in samples or b not in samples:
            continue  # the bf16 variant, on a CPU without bf16 units
        r = paired_ratio(samples[a], samples[b])
        ratios[label] = {**r.as_dict(), "target": target}
    return {"model": model.description, "size": f"{size[0]}x{size[1]}", "repeats": repeats,
            "clock": clock, "s_per_img": {k: round(v, 5) for k, v in med.items()},
            "ratios": ratios}


def callgrind_counts(config_dir: str, name: str, size: Sequence[int], number: int = 2) -> Dict:
    """Instructions per image (valgrind's callgrind, via torch.utils.benchmark.Timer, 1 thread)
    of eager GN-all and eager GN+WS folded, and their ratio: counts repeat exactly, so this
    resolves differences far below elapsed-time noise (instructions are not time: memory stalls
    are not counted)."""
    if shutil.which("valgrind") is None:
        raise OSError("--callgrind needs valgrind (apt-get install valgrind)")
    counts = {}
    env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": os.pathsep.join(filter(None, [_repo_root(),
                                                       os.environ.get("PYTHONPATH", "")]))}
    # Timer runs `python` from PATH and checks it is this interpreter
    with mock.patch.dict(os.environ, env):
        for which in ("eager_gn_all", "eager_gnws_folded"):
            setup = ("from gn_det.benchmark.export_speed import callgrind_setup\n"
                     f"call = callgrind_setup({config_dir!r}, {name!r}, {tuple(size)!r}, "
                     f"{which!r})")
            t0 = time.perf_counter()
            stats = Timer("call()", setup=setup).collect_callgrind(number=number,
                                                                   collect_baseline=False)
            counts[which] = stats.counts(denoise=True) / number
            print(f"  callgrind {which}: {counts[which]:,.0f} instructions per image "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return {"model": name, "size": f"{size[0]}x{size[1]}", "instructions_per_img": counts,
            "folded_vs_gn_all": round(counts["eager_gnws_folded"] / counts["eager_gn_all"], 5)}


def callgrind_setup(config_dir: str, name: str, size, which: str) -> Callable[[], object]:
    """Inside the callgrind process: the one eager variant `which`, warmed up."""
    gn, gnws, _ = build_models(config_dir, MODELS[name], size)
    model = gn if which == "eager_gn_all" else export.fold_for_export(gnws)[0]
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(1)) * 255

    def call():
        with torch.no_grad():
            return model([{"image": image}])

    call()
    return call


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export_benchmark(config_dir: str, models: Sequence[str] = tuple(MODELS), repeats: int = 3,
                     quick: bool = False, size: Optional[Sequence[int]] = None,
                     clock: str = "cpu", callgrind: bool = False) -> Dict:
    """Per model: seconds per image per variant and the RATIOS (with intervals); with
    `callgrind`, instruction counts of eager folded vs eager GN-all on the toy model at its
    quick size. `size` overrides the r50 model's input size."""
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"export models {unknown or list(models)}: valid are "
                         f"{', '.join(MODELS)}")
    result: Dict[str, object] = {"models": {}}
    for name in models:
        path = os.path.join(config_dir, MODELS[name].gn[0])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"export model {name}: config {path!r} not found "
                                    f"(--config-dir should be the repository's configs/)")
        result["models"][name] = time_model(name, MODELS[name], config_dir, repeats, quick,
                                            size if name == "r50" else None, clock)
    if callgrind:
        result["callgrind"] = callgrind_counts(config_dir, "toy", MODELS["toy"].quick_size)
    return result


def ratio_lines(result: Dict) -> List[tuple]:
    """(label, Ratio-like dict, target) per ratio, for tools/benchmark.py's target lines."""
    lines = []
    for name, row in result.get("models", {}).items():
        for label, r in row["ratios"].items():
            lines.append((f"export {name} {row['size']}: {label}", r, r.get("target")))
    return lines


# ------------------------------------------------------------------------ accuracy of the export

# norm -> (MODEL.NORMS TYPE, WS, extra opts). LN_CHW is the GN paper's LN, GroupNorm(1, C).
ACCURACY_NORMS = {
    "GN": ("GN", False, ()),
    "LN_CHW": ("LN_CHW", False, ()),
    "IN": ("IN", False, ()),
    "GN+WS": ("GN", True, ()),
    "BN": ("BN", False, ()),
}
IN_MIN_SIZE = 129  # IN needs P7 (stride 128) larger than 1x1: GroupNorm rejects 1 value/group


def like_trained(model, seed: int = 0):
    """Give a freshly built RetinaNet what training would, so every part of the graph shows in
    its detections: norm affines away from 1/0, BN running statistics away from 0/1, scores
    above the test threshold (cls_score bias -2) and box deltas that move boxes off their
    anchors (bbox_pred weights N(0, 0.05))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            affine = (nn.GroupNorm, nn.modules.batchnorm._BatchNorm, CycleBatchNormList)
            if isinstance(m, affine) and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 1.5 + 0.5)
        model.head.cls_score.bias.fill_(-2.0)
        model.head.bbox_pred.weight.normal_(0, 0.05, generator=gen)
    return model.eval()


def _float64_detections(model, image):
    """The eager model's detections computed in float64 (box decoding stays float32, as
    detectron2's Box2BoxTransform casts; NMS gets float32, as torchvision's CPU kernel needs)."""
    model64 = copy.deepcopy(model).double()
    nms = retinanet.batched_nms
    retinanet.batched_nms = lambda b, s, i, t: nms(b.float(), s.float(), i, t)
    try:
        with torch.no_grad():
            return export.Detections.of(model64([{"image": image.double()}])[0]["instances"])
    finally:
        retinanet.batched_nms = nms


def _differences(ref, got) -> Dict:
    """Max |dbox| (px), max |dbox| / box size, max |dscore| and matched counts, per detection."""
    absolute = export.match_detections(ref, got, export.Tolerance(math.inf, 0, math.inf))
    relative = export.match_detections(ref, got, export.Tolerance(1e-12, 1.0, math.inf))
    return {"matched": absolute.matched, "reference": absolute.reference,
            "exported": absolute.exported, "max_box_px": absolute.max_box_diff,
            "max_box_rel": relative.max_box_excess, "max_score": absolute.max_score_diff}


def _bf16_differences(ref, got) -> Dict:
    """A bf16 form against float32, paired at the bf16 tolerance (export.BF16_TOLERANCE): how
    many detections changed beyond it (NMS keeping another box), and the largest differences
    over every pair."""
    cmp = export.match_detections(ref, got, export.BF16_TOLERANCE)
    relative = export.match_detections(ref, got, export.Tolerance(1e-12, 1.0, math.inf))
    return {"matched": cmp.matched, "reference": cmp.reference, "exported": cmp.exported,
            "changed": cmp.changed, "max_box_px": cmp.max_box_diff,
            "max_box_rel": relative.max_box_excess, "max_score": cmp.max_score_diff}


def accuracy_benchmark(config_dir: str, size: Sequence[int] = (256, 256),
                       norms: Sequence[str] = tuple(ACCURACY_NORMS), float64: bool = True
                       ) -> Dict:
    """Per norm, on the toy R-18 (random weights made `like_trained`) at `size` and 32 px
    taller (the exported graph's dynamic input): TorchScript and ONNX Runtime (and bf16
    TorchScript where the CPU has bf16 units) against eager float32, and, with `float64`, eager
    float32 and ONNX Runtime against eager float64: how far float32 itself is from exact, beside
    how far the export is from eager."""
    formats = [*export.DEFAULT_FORMATS, *(("torchscript_bf16",) if cpu_bf16_flags() else ())]
    rows = {}
    for norm in norms:
        kind, ws, extra = ACCURACY_NORMS[norm]
        if kind == "IN" and min(size) < IN_MIN_SIZE:
            rows[norm] = {"skipped": f"IN needs inputs of at least {IN_MIN_SIZE} px"}
            continue
        opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *extra]
        for component in NORM_COMPONENTS:
            opts += [f"MODEL.NORMS.{component}.TYPE", kind, f"MODEL.NORMS.{component}.WS", ws]
        cfg = load_cfg(os.path.join(config_dir, TOY_CONFIG), opts)
        torch.manual_seed(0)
        model = like_trained(build_model(cfg))
        gen = torch.Generator().manual_seed(1)
        samples = [export.Sample(f"{size[0] + 32 * i}x{size[1]}",
                                 torch.rand(3, size[0] + 32 * i, size[1], generator=gen) * 255,
                                 size[0] + 32 * i, size[1]) for i in range(2)]
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            loose = export.Tolerance(math.inf, 0, math.inf, 1.0)
            written = [f for f in formats if f in export.DEFAULT_FORMATS]
            export.export_model(model, cfg, samples, tmp, written, loose)
            row = {}
            for fmt in [f for f in formats if f not in written]:  # bf16: measured if written
                try:  # its check against the eager model in its own precision may refuse it
                    export.export_model(model, cfg, samples, tmp, [fmt], loose)
                    written.append(fmt)
                except export.ExportError as e:
                    row[f"{fmt} refused"] = str(e)
            runners = {fmt: export.load_runner(fmt, os.path.join(tmp, export.FILE_NAMES[fmt]))
                       for fmt in written}
            for s in samples:
                eager = export.eager_detections(model, s)
                outs = {fmt: run(s.image) for fmt, run in runners.items()}
                cell = {f"{fmt} vs eager": (_bf16_differences if fmt.endswith("bf16") else
                                            _differences)(eager, out)
                        for fmt, out in outs.items()}
                if float64:
                    exact = _float64_detections(model, s.image)
                    cell["eager vs float64"] = _differences(exact, eager)
                    cell["onnx vs float64"] = _differences(exact, outs["onnx"])
                row[s.name] = cell
        rows[norm] = row
        cells = [c for c in row.values() if isinstance(c, dict)]
        worst = {k: max(c[k]["max_box_px"] for c in cells) for k in cells[0]}
        for refusal in (v for v in row.values() if isinstance(v, str)):
            print(f"  export accuracy {norm}: {refusal}", flush=True)
        print(f"  export accuracy {norm} ({time.perf_counter() - t0:.0f}s): max |dbox| px "
              + ", ".join(f"{k} {v:.3g}" for k, v in worst.items()), flush=True)
    return {"model": MODELS["toy"].description, "size": f"{size[0]}x{size[1]}", "rows": rows,
            "tolerance": dataclasses.asdict(export.DEFAULT_TOLERANCE)}
