"""End-to-end RetinaNet R50-FPN benchmark on CPU: train s/iter, peak RSS and inference s/img (with
and without WS folding) for FrozenBN, stock detectron2 GN-all, and gn_det's GN-FPN+head, GN-all
and GN+WS-all.

Each variant lives in its own worker process (this module run with `--worker`), so its peak RSS
(ru_maxrss) is its own; the parent sends one command at a time and rotates through the workers,
so train steps and inference calls of all variants are interleaved within every repeat. Every
timing ratio is the median of its per-round ratios with a bootstrap interval; ratios between
variants that build the same network are the noise floor (`noise_floor`: 1.00 must lie inside).
"""
import argparse
import copy
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..model_zoo import NORM_PRESETS
from ..utils.machine import peak_rss_mb
from ..utils.processes import child_env
from .timing import CLOCKS, eta, paired_ratio, ratio


class Variant(NamedTuple):
    config: str  # under configs/
    opts: tuple  # extra config options
    description: str


def _preset(name: str, opts: tuple = (), note: str = "") -> Variant:
    """A variant built from one of gn_det's norm presets (gn_det.model_zoo.NORM_PRESETS)."""
    preset = NORM_PRESETS[name]
    return Variant(preset.config, opts, preset.description + note)


VARIANTS: Dict[str, Variant] = {
    "frozen_bn": _preset("frozenbn"),
    "stock_gn_all": Variant(NORM_PRESETS["gn_all"].config,
                            ("MODEL.BACKBONE.NAME", "build_retinanet_resnet_fpn_backbone",
                             "MODEL.RESNETS.NORM", "GN", "MODEL.FPN.NORM", "GN",
                             "MODEL.NORMS.BACKBONE.TYPE", "", "MODEL.NORMS.FPN.TYPE", ""),
                            "detectron2's own GN ResNet-FPN builder (RESNETS.NORM / FPN.NORM = "
                            "GN) with gn_det's GN head (v0.6's own GN head crashes on current "
                            "torch)"),
    "gn_fpn_head": _preset("gn_fpn_head"),
    "gn_all": _preset("gn_all"),
    "gnws_all": _preset("gnws_all"),
    "gn_all_channels_last": _preset("gn_all", ("MODEL.CHANNELS_LAST", True),
                                    "; MODEL.CHANNELS_LAST (NHWC on CPU)"),
    "gnws_all_channels_last": _preset("gnws_all", ("MODEL.CHANNELS_LAST", True),
                                      "; MODEL.CHANNELS_LAST (NHWC on CPU)"),
}
FULL_SIZE, QUICK_SIZE = (512, 768), (128, 192)
BOXES_PER_IMAGE = 4


def network_signature(model) -> str:
    """Digest of the network's structure: every module holding parameters (or a leaf), in order,
    with its type, shape attributes, forward pre-hooks (e.g. MODEL.CHANNELS_LAST's) and which
    parameters train. Two variants with the same signature run the same ops on tensors of the
    same shapes, so any timing gap between them is measurement noise (or post-processing of
    different detections)."""
    import hashlib

    attrs = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
             "groups", "num_groups", "num_channels", "num_features", "eps")
    parts = []
    for module in model.modules():
        own = list(module.named_parameters(recurse=False))
        hooks = [getattr(h, "__name__", type(h).__name__)
                 for h in module._forward_pre_hooks.values()]
        if own or hooks or not list(module.children()):
            parts.append(repr((type(module).__name__, hooks,
                               [(a, getattr(module, a)) for a in attrs if hasattr(module, a)],
                               [(n, tuple(p.shape), p.requires_grad) for n, p in own])))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _build(config_file: str, opts: Sequence[str], height: int, width: int, batch: int):
    """(cfg, model, optimizer, training batch, inference inputs) for one variant."""
    import torch

    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances

    from .. import modeling  # noqa: F401  (registers gn_det's backbones and meta-architecture)
    from ..config import load_cfg
    from ..engine.optimizer import build_optimizer

    cfg = load_cfg(config_file, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(1)
    images = []
    for _ in range(batch):
        xy = torch.rand(BOXES_PER_IMAGE, 2, generator=gen) * torch.tensor([width, height]) * 0.6
        wh = (0.1 + 0.3 * torch.rand(BOXES_PER_IMAGE, 2, generator=gen)) * torch.tensor(
            [width, height])
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.randint(0, cfg.MODEL.RETINANET.NUM_CLASSES, (BOXES_PER_IMAGE,),
                                        generator=gen)
        images.append({"image": torch.rand(3, height, width, generator=gen) * 255,
                       "instances": inst, "height": height, "width": width})
    return cfg, model, optimizer, images


def worker_main(argv: Optional[List[str]] = None):
    """One variant's process: build it, then answer JSON commands on stdin, one per line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--config", required=True)
    ap.add_argument("--opts", default="[]")
    ap.add_argument("--size", required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)  # 0: torch's default
    args = ap.parse_args(argv)
    # Replies go to the real stdout; anything the libraries print goes to stderr.
    reply_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    height, width = (int(v) for v in args.size.split("x"))

    def reply(**kw):
        reply_stream.write(json.dumps(kw) + "\n")
        reply_stream.flush()

    import torch

    from detectron2.utils.events import EventStorage

    from ..layers import WSConv2d, fold_ws

    if args.threads:
        torch.set_num_threads(args.threads)

    cfg, model, optimizer, batch = _build(args.config, json.loads(args.opts), height, width,
                                          args.batch)
    ws_convs = sum(isinstance(m, WSConv2d) for m in model.modules())
    folded_signature = network_signature(fold_ws(copy.deepcopy(model))) if ws_convs else None
    folded = None  # folded at the first folded inference, from the trained weights
    reply(ready=True, params=sum(p.numel() for p in model.parameters()), ws_convs=ws_convs,
          torch_threads=torch.get_num_threads(), rss_mb=round(_rss_mb(), 1),
          signature=network_signature(model), folded_signature=folded_signature)
    with EventStorage(0) as storage:
        for line in sys.stdin:
            cmd = json.loads(line)
            what = cmd["cmd"]
            if what == "train":
                model.train()
                for _ in range(cmd.get("untimed", 0)):
                    _train_step(model, optimizer, batch)
                    storage.iter += 1
                t0 = _clocks()
                loss = _train_step(model, optimizer, batch)
                seconds = _since(t0)
                storage.iter += 1
                reply(loss=loss, **seconds)
            elif what == "infer":  # the batch's first image alone, as detectron2 evaluates
                if cmd.get("folded") and folded is None:
                    folded = fold_ws(copy.deepcopy(model)).eval()
                net = folded if cmd.get("folded") else model.eval()
                inputs = [{k: batch[0][k] for k in ("image", "height", "width")}]
                with torch.no_grad():
                    for _ in range(cmd.get("untimed", 0)):
                        net(inputs)
                    t0 = _clocks()
                    net(inputs)
                reply(**_since(t0))
            elif what == "stats":
                reply(peak_rss_mb=round(peak_rss_mb(), 1), rss_mb=round(_rss_mb(), 1))
            elif what == "quit":
                reply(bye=True)
                return
            else:
                reply(error=f"unknown command {what!r}")
            _give_back_memory()


def _clocks() -> Dict[str, float]:
    return {name: clock() for name, clock in CLOCKS.items()}


def _since(start: Dict[str, float]) -> Dict[str, float]:
    """Seconds on every clock since `start` (wall: elapsed; cpu: this process, all threads)."""
    now = _clocks()
    return {name: now[name] - start[name] for name in start}


def _train_step(model, optimizer, batch) -> float:
    """detectron2's SimpleTrainer.run_step on a fixed batch; returns the loss."""
    loss = sum(model(batch).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _give_back_memory():
    """Return freed heap memory to the OS (glibc malloc_trim) so that idle workers do not hold
    their peak while the others run; each timed call is preceded by an untimed one, so timings
    are of a warm allocator."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Worker:
    """Parent-side handle of one variant's worker process."""

    def __init__(self, name: str, config_file: str, opts: Sequence[str], size, batch: int,
                 threads: int = 0):
        self.name = name
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"gn_det_bench_{name}_",
                                               suffix=".log", delete=False)
        env = child_env()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gn_det.benchmark.e2e", "--worker", "--config", config_file,
             "--opts", json.dumps(list(opts)), "--size", f"{size[0]}x{size[1]}",
             "--batch", str(batch), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)

    def read(self) -> Dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            self.log.seek(0)
            tail = self.log.read()[-3000:]
            raise RuntimeError(f"e2e worker {self.name!r} exited (code {self.proc.poll()}); "
                               f"its log {self.log.name} ends:\n{tail}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"e2e worker {self.name!r}: {out['error']}")
        return out

    def ask(self, **cmd) -> Dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.ask(cmd="quit")
                self.proc.wait(timeout=30)
            except (RuntimeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()
        os.unlink(self.log.name)


def _rounds(calls: List[tuple], repeats: int, label: str
            ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, Dict[str, List[float]]]]:
    """Median seconds per key and clock ({key: {"wall": s, "cpu": s}}) and the samples behind
    them ({key: {"wall": [s, ...], ...}}, the r-th from round r: paired across keys),
    interleaved through the workers: `calls` are (key, worker, cmd); each of `repeats` rounds
    gives every call one turn (an untimed call, then the timed one), starting one call later
    than the round before."""
    samples = {key: {name: [] for name in CLOCKS} for key, _, _ in calls}
    start = time.perf_counter()
    for r in range(repeats):
        shift = r % len(calls)
        for key, worker, cmd in calls[shift:] + calls[:shift]:
            out = worker.ask(untimed=1, **cmd)
            for name in CLOCKS:
                samples[key][name].append(out[name])
        print(f"  e2e {label} [{r + 1}/{repeats}] "
              + ", ".join(f"{k} {v['wall'][-1]:.2f}s" for k, v in samples.items())
              + f"; {eta(r + 1, repeats, time.perf_counter() - start)}", flush=True)
    return ({key: {name: statistics.median(v) for name, v in clocks.items()}
             for key, clocks in samples.items()}, samples)


def e2e_benchmark(config_dir: str, quick: bool = False, repeats: int = 3,
                  size: Optional[Sequence[int]] = None, batch: int = 2,
                  variants: Sequence[str] = tuple(VARIANTS), threads: int = 0) -> Dict:
    """Train s/iter, peak RSS, inference s/img per variant (elapsed, and the worker's CPU time:
    `_cpu_` keys), and the issue's target ratios on both. `threads`: torch threads in each
    worker (0: torch's default)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"e2e variants {unknown or list(variants)}: valid are "
                         f"{', '.join(VARIANTS)}")
    size = tuple(size or (QUICK_SIZE if quick else FULL_SIZE))
    print(f"e2e: RetinaNet R50-FPN, {size[0]}x{size[1]}, batch {batch}, variants "
          f"{', '.join(variants)}; starting {len(variants)} worker processes", flush=True)
    workers: List[Worker] = []
    try:
        for name in variants:
            variant = VARIANTS[name]
            path = os.path.join(config_dir, variant.config)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"e2e variant {name}: config {path!r} not found "
                                        f"(--config-dir should be the repository's configs/)")
            workers.append(Worker(name, path, variant.opts, size, batch, threads))
        ready = {w.name: w.read() for w in workers}
        train, train_samples = _rounds([(w.name, w, {"cmd": "train"}) for w in workers],
                                       repeats, "train s/iter")
        memory = {w.name: w.ask(cmd="stats") for w in workers}
        calls = [(w.name, w, {"cmd": "infer"}) for w in workers]
        calls += [(f"{w.name}_folded", w, {"cmd": "infer", "folded": True}) for w in workers
                  if ready[w.name]["ws_convs"]]
        infer, infer_samples = _rounds(calls, repeats, "inference s/img")
    finally:
        for w in workers:
            w.close()
    rows = {}
    for name in variants:
        rows[name] = {"description": VARIANTS[name].description, "params": ready[name]["params"],
                      "ws_convs": ready[name]["ws_convs"],
                      "peak_rss_mb": memory[name]["peak_rss_mb"],
                      "rss_after_build_mb": ready[name]["rss_mb"],
                      **_timing_keys("train", "s_per_iter", train[name], 3),
                      **_timing_keys("infer", "s_per_img", infer[name], 4)}
        if f"{name}_folded" in infer:
            rows[name].update(_timing_keys("infer_folded", "s_per_img", infer[f"{name}_folded"],
                                           4))
    loader = loader_benchmark(config_dir, size, repeats)
    loader["share_of_train_step"] = ratio(loader["s_per_img"] * batch,
                                          min(r["train_s_per_iter"] for r in rows.values()))
    ratios = _ratios(rows, {"train": train_samples, "infer": infer_samples})
    return {"size": f"{size[0]}x{size[1]}", "batch": batch, "repeats": repeats,
            "torch_threads": ready[variants[0]]["torch_threads"], "rows": rows,
            "ratios": ratios, "same_network": same_networks(ready),
            "noise_floor": noise_floor(ratios, ready), "loader": loader}


def same_networks(ready: Dict[str, Dict]) -> List[str]:
    """Pairs of variants (a WS variant's folded model counted as '<name> folded') whose network
    signatures are equal: the noise floor to read their ratios against."""
    nets = {name: r["signature"] for name, r in ready.items()}
    nets.update({f"{name} folded": r["folded_signature"] for name, r in ready.items()
                 if r.get("folded_signature")})
    names = list(nets)
    return [f"{a} = {b}" for i, a in enumerate(names) for b in names[i + 1:]
            if nets[a] == nets[b]]


def _timing_keys(what: str, unit: str, seconds: Dict[str, float], digits: int) -> Dict:
    """{'train_s_per_iter': wall, 'train_cpu_s_per_iter': cpu} from {'wall': .., 'cpu': ..}."""
    return {f"{what}_{unit}": round(seconds["wall"], digits),
            f"{what}_cpu_{unit}": round(seconds["cpu"], digits)}


# (label, variant, reference variant, row key, target); a target of None: reported only.
RATIOS = (
    ("train gn_all / stock_gn_all", "gn_all", "stock_gn_all", "train_s_per_iter", 1.00),
    ("train gnws_all / stock_gn_all", "gnws_all", "stock_gn_all", "train_s_per_iter", 1.05),
    ("train gnws_all / frozen_bn", "gnws_all", "frozen_bn", "train_s_per_iter", 1.15),
    ("peak RSS gnws_all / gn_all", "gnws_all", "gn_all", "peak_rss_mb", 1.10),
    ("infer gnws_all folded / gn_all", "gnws_all", "gn_all", "infer_folded_s_per_img", 1.02),
    ("infer gnws_all unfolded / gn_all", "gnws_all", "gn_all", "infer_s_per_img", None),
    ("train stock_gn_all / frozen_bn", "stock_gn_all", "frozen_bn", "train_s_per_iter", None),
    ("infer stock_gn_all / frozen_bn", "stock_gn_all", "frozen_bn", "infer_s_per_img", None),
    ("train gn_fpn_head / frozen_bn", "gn_fpn_head", "frozen_bn", "train_s_per_iter", None),
    ("train gn_all / frozen_bn", "gn_all", "frozen_bn", "train_s_per_iter", None),
    ("infer gn_all / stock_gn_all", "gn_all", "stock_gn_all", "infer_s_per_img", None),
    ("infer gn_all / frozen_bn", "gn_all", "frozen_bn", "infer_s_per_img", None),
    ("peak RSS gn_all / stock_gn_all", "gn_all", "stock_gn_all", "peak_rss_mb", None),
    ("train gn_all channels_last / NCHW", "gn_all_channels_last", "gn_all", "train_s_per_iter",
     None),
    ("infer gn_all channels_last / NCHW", "gn_all_channels_last", "gn_all", "infer_s_per_img",
     None),
    ("train gnws_all channels_last / NCHW", "gnws_all_channels_last", "gnws_all",
     "train_s_per_iter", None),
    ("train gnws_all channels_last / frozen_bn", "gnws_all_channels_last", "frozen_bn",
     "train_s_per_iter", None),
)


def _sample_key(variant: str, key: str) -> Tuple[str, str]:
    """(group, key) of the samples behind a row key: ('infer', 'gnws_all_folded')."""
    group = key.split("_")[0]
    return group, f"{variant}_folded" if "folded" in key else variant


def _ratios(rows: Dict, samples: Optional[Dict] = None) -> Dict:
    """RATIOS as {label: {"ratio", "ci", "cpu_ratio", "cpu_ci", "target"}}, for those whose
    variants both ran. With the timing samples (`samples`: {"train"|"infer": {key: {clock:
    [s, ...]}}}, paired by round), a ratio is the median of the per-round ratios with its
    bootstrap interval (timing.paired_ratio); without them (peak RSS), the ratio of the two
    values. The folded inference ratio compares GN+WS folded against GN-all's (plain, WS-free)
    inference."""
    out = {}
    for label, a, b, key, target in RATIOS:
        ref_key = key.replace("infer_folded_", "infer_")
        if not (rows.get(a, {}).get(key) and rows.get(b, {}).get(ref_key)):
            continue
        (group, ka), (_, kb) = _sample_key(a, key), _sample_key(b, ref_key)
        paired = samples.get(group, {}) if samples else {}
        if ka in paired and kb in paired:
            entry = {"target": target}
            for clock, prefix in (("wall", ""), ("cpu", "cpu_")):
                r = paired_ratio(paired[ka][clock], paired[kb][clock])
                entry[f"{prefix}ratio"] = round(r.ratio, 3)
                entry[f"{prefix}ci"] = [round(r.low, 3), round(r.high, 3)]
            out[label] = entry
            continue
        out[label] = {"ratio": ratio(rows[a][key], rows[b][ref_key]), "target": target}
        cpu_key, cpu_ref = (k.replace("_s_per_", "_cpu_s_per_") for k in (key, ref_key))
        if cpu_key != key:
            out[label]["cpu_ratio"] = ratio(rows[a][cpu_key], rows[b][cpu_ref])
    return out


def noise_floor(ratios: Dict, ready: Dict[str, Dict]) -> Dict[str, Dict]:
    """The timing ratios between two variants that build the same network (network_signature;
    a folded GN+WS model counts as its folded network): each must read 1.00 within its
    interval, or the interval understates this machine's noise."""
    out = {}
    for label, a, b, key, _ in RATIOS:
        if label not in ratios or "ci" not in ratios[label] or a not in ready or b not in ready:
            continue
        net_a = ready[a]["folded_signature"] if "folded" in key else ready[a]["signature"]
        if net_a and net_a == ready[b]["signature"]:
            r = ratios[label]
            out[label] = {"ci": r["ci"], "cpu_ci": r["cpu_ci"],
                          "contains_1": r["ci"][0] <= 1.0 <= r["ci"][1],
                          "cpu_contains_1": r["cpu_ci"][0] <= 1.0 <= r["cpu_ci"][1]}
    return out


def loader_benchmark(config_dir: str, size: Sequence[int], repeats: int) -> Dict:
    """Seconds per image of detectron2's training DatasetMapper (JPEG decode, resize, flip,
    annotations to Instances) at `size`: what data-loader workers could take off the step."""
    import numpy as np
    from PIL import Image

    from detectron2.data import DatasetMapper
    from detectron2.structures import BoxMode

    from ..config import load_cfg

    height, width = size
    cfg = load_cfg(os.path.join(config_dir, VARIANTS["gn_all"].config),
                   ["INPUT.MIN_SIZE_TRAIN", (min(size),), "INPUT.MAX_SIZE_TRAIN", max(size)])
    mapper = DatasetMapper(cfg, is_train=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.jpg")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            path, quality=90)
        record = {"file_name": path, "height": height, "width": width, "image_id": 0,
                  "annotations": [{"bbox": [10, 20, width / 3, height / 4], "category_id": 1,
                                   "bbox_mode": BoxMode.XYWH_ABS, "iscrowd": 0}]}
        mapper(copy.deepcopy(record))
        times = []
        for _ in range(max(5, repeats)):
            t0 = time.perf_counter()
            mapper(copy.deepcopy(record))
            times.append(time.perf_counter() - t0)
    return {"s_per_img": round(statistics.median(times), 4)}


if __name__ == "__main__":
    worker_main()
