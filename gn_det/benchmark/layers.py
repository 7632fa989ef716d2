"""Layer benchmarks at R50-FPN shapes (N=2, feature maps of a 512x768 input): GroupNorm against
the naive reshape/mean/var GN, BatchNorm and FrozenBN; WS convs against plain convs in training
and in inference; and bf16 channels_last GroupNorm by route (torch's kernel, the per-image
backward, the NCHW round trip) over batch, channels and map size. Each comparison is timed
side by side (gn_det.benchmark.timing.interleaved); every ratio is the median of the paired
per-repeat ratios with its bootstrap interval (`<ratio>_ci`).
"""
import copy
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d

from ..layers import WS_STYLES, GroupNorm, WSConv2d, build_norm, fold_ws, standardize_weight
from ..layers.group_norm import group_norm_channels_last, group_norm_via_nchw
from .timing import CLOCKS, interleaved, medians, paired_ratio

BATCH = 2
# (channels, H, W) of GN inputs in R50-FPN at 512x768: res2 bottleneck (stride 4), FPN / head
# at P3 (stride 8), res4 output (stride 16).
GN_SHAPES: Tuple[Tuple[int, int, int], ...] = ((64, 128, 192), (256, 64, 96), (1024, 32, 48))
# (name, in, out, kernel, H, W) of convs in R50-FPN-RetinaNet at 512x768.
CONV_SHAPES: Tuple[Tuple[str, int, int, int, int, int], ...] = (
    ("res4.conv2", 256, 256, 3, 32, 48),
    ("res5.conv2", 512, 512, 3, 16, 24),
    ("res5.conv3", 512, 2048, 1, 16, 24),
    ("head.P3", 256, 256, 3, 64, 96),
)
QUICK_SHRINK = 4  # --quick divides H and W by this


class NaiveGroupNorm(nn.Module):
    """GN written out as in the GN paper's code and the usual tutorials: reshape to
    (N, G, C/G, H, W), mean and (biased) variance, normalize, reshape back, affine."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups, self.eps = num_groups, eps
        self.weight = nn.Parameter(torch.ones(1, num_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1, 1))

    def forward(self, x):
        n, c, h, w = x.shape
        x = x.reshape(n, self.num_groups, c // self.num_groups, h, w)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        var = x.var(dim=(2, 3, 4), keepdim=True, unbiased=False)
        x = ((x - mean) / (var + self.eps).sqrt()).reshape(n, c, h, w)
        return x * self.weight + self.bias


def _fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of `module` on `x` (gradients reset so none accumulate)."""
    params = [p for p in module.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        module(x.detach().requires_grad_()).backward(grad)

    return step


def _no_grad(fn: Callable, *args) -> Callable[[], None]:
    def call():
        with torch.no_grad():
            fn(*args)

    return call


def _shrink(hw: Sequence[int], quick: bool) -> List[int]:
    return [max(1, v // QUICK_SHRINK) if quick else v for v in hw]


def gn_benchmark(quick: bool = False, repeats: int = 3, shapes=GN_SHAPES,
                 clock: str = "wall") -> Dict:
    """GN forward+backward per shape: ours (nn.GroupNorm via build_norm, NCHW and channels_last)
    vs naive GN, BatchNorm2d (train mode) and FrozenBN; and a conv3x3-GN-ReLU block in NCHW vs
    channels_last (the memory-format candidate). Milliseconds (of `clock`, a timing.CLOCKS name)
    are medians; ratios are ours/other."""
    timer = CLOCKS[clock]
    torch.manual_seed(0)
    rows = {}
    for c, h, w in shapes:
        h, w = _shrink((h, w), quick)
        x = torch.randn(BATCH, c, h, w)
        grad = torch.randn_like(x)
        ours = build_norm("GN", c, layer=f"bench.gn{c}")
        naive = NaiveGroupNorm(ours.num_groups, c)
        torch.testing.assert_close(ours(x), naive(x), atol=1e-4, rtol=1e-4)  # same function
        x_cl, grad_cl = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
        variants = {"ours": _fwd_bwd(ours, x, grad), "naive": _fwd_bwd(naive, x, grad),
                    "bn": _fwd_bwd(nn.BatchNorm2d(c), x, grad),
                    "frozen_bn": _fwd_bwd(FrozenBatchNorm2d(c), x, grad),
                    "ours_channels_last": _fwd_bwd(ours, x_cl, grad_cl)}
        samples = interleaved(variants, repeats, label=f"GN C={c} {h}x{w} ", clock=timer)
        rows[f"C{c}_{h}x{w}"] = {
            **{f"{k}_ms": round(v * 1e3, 3) for k, v in medians(samples).items()},
            **_ratios(samples, {"ours_vs_naive": ("ours", "naive"), "ours_vs_bn": ("ours", "bn"),
                                "ours_vs_frozen_bn": ("ours", "frozen_bn"),
                                "channels_last_vs_ours": ("ours_channels_last", "ours")})}
    rows["block_conv_gn_relu"] = _channels_last_block(quick, repeats, timer)
    return {"batch": BATCH, "repeats": repeats, "clock": clock, "rows": rows,
            "targets": {"ours_vs_naive": _worst(rows, "ours_vs_naive", 0.5),
                        "ours_vs_bn": _worst(rows, "ours_vs_bn", 1.5)}}


# (N, C, H, W) of bf16 channels_last GN inputs: 2 images of a 416x576 training batch (R-18
# real configs) and 8 of 160 px (the demo), from the coarse levels to res2; 32 groups.
GN_ROUTE_SHAPES: Tuple[Tuple[int, int, int, int], ...] = (
    (2, 64, 104, 144), (2, 128, 52, 72), (2, 256, 40, 40), (2, 256, 26, 36), (2, 128, 13, 18),
    (8, 64, 40, 40), (8, 128, 20, 20), (8, 256, 10, 10), (8, 128, 5, 5))
GN_ROUTE_GROUPS = 32


def gn_routes_benchmark(quick: bool = False, repeats: int = 5, shapes=GN_ROUTE_SHAPES,
                        clock: str = "wall") -> Dict:
    """bf16 channels_last GroupNorm forward + backward (32 groups, fp32 affine as under
    autocast) by route: torch's own kernel, the per-image channels_last backward, the NCHW
    round trip, and gn_det's GroupNorm (which picks one by map size). Milliseconds are medians;
    `ours_vs_<route>` ratios are paired."""
    timer = CLOCKS[clock]
    torch.manual_seed(0)
    g = GN_ROUTE_GROUPS
    routes = {"torch": lambda x, m: F.group_norm(x, g, m.weight, m.bias, m.eps),
              "per_image": lambda x, m: group_norm_channels_last(x, g, m.weight, m.bias, m.eps),
              "via_nchw": lambda x, m: group_norm_via_nchw(x, g, m.weight, m.bias, m.eps),
              "ours": lambda x, m: m(x)}
    rows = {}
    for n, c, h, w in shapes:
        h, w = _shrink((h, w), quick)
        module = GroupNorm(GN_ROUTE_GROUPS, c)
        x = torch.randn(n, c, h, w).to(torch.bfloat16, memory_format=torch.channels_last)
        grad = torch.randn_like(x)

        def step(route, module=module, x=x, grad=grad):
            def run():
                module.weight.grad = module.bias.grad = None
                route(x.detach().requires_grad_(), module).backward(grad)
            return run

        samples = interleaved({k: step(r) for k, r in routes.items()}, repeats,
                              label=f"GN routes {n}x{c}x{h}x{w} ", clock=timer)
        rows[f"N{n}_C{c}_{h}x{w}"] = {
            **{f"{k}_ms": round(v * 1e3, 3) for k, v in medians(samples).items()},
            **_ratios(samples, {f"ours_vs_{k}": ("ours", k) for k in routes if k != "ours"})}
    return {"repeats": repeats, "clock": clock, "groups": GN_ROUTE_GROUPS, "dtype": "bfloat16",
            "rows": rows}


def _ratios(samples: Dict[str, List[float]], pairs: Dict[str, Tuple[str, str]]) -> Dict:
    """{key: median paired ratio, key_ci: [low, high]} for each key -> (variant, reference)."""
    out = {}
    for key, (a, b) in pairs.items():
        r = paired_ratio(samples[a], samples[b])
        out[key] = round(r.ratio, 3)
        out[f"{key}_ci"] = [round(r.low, 3), round(r.high, 3)]
    return out


def _worst(rows: Dict, key: str, target: float) -> Dict:
    """The target entry for the shape where `key` is largest, with that shape's interval."""
    shape = max((k for k in rows if k.startswith("C")), key=lambda k: rows[k][key])
    return {"max": rows[shape][key], "ci": rows[shape][f"{key}_ci"], "target": target}


def _channels_last_block(quick: bool, repeats: int, timer) -> Dict:
    """conv3x3(256) + GN + ReLU forward+backward at P3, NCHW vs channels_last end to end."""
    h, w = _shrink((64, 96), quick)
    variants = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        block = nn.Sequential(nn.Conv2d(256, 256, 3, padding=1, bias=False),
                              build_norm("GN", 256), nn.ReLU()).to(memory_format=fmt)
        x = torch.randn(BATCH, 256, h, w).contiguous(memory_format=fmt)
        grad = torch.randn(BATCH, 256, h, w).contiguous(memory_format=fmt)
        variants["nchw" if fmt is torch.contiguous_format else "channels_last"] = \
            _fwd_bwd(block, x, grad)
    samples = interleaved(variants, repeats, label=f"conv-GN-ReLU {h}x{w} ", clock=timer)
    return {**{f"{k}_ms": round(v * 1e3, 3) for k, v in medians(samples).items()},
            **_ratios(samples, {"channels_last_vs_nchw": ("channels_last", "nchw")})}


def _standardize_alternatives(weight: torch.Tensor, eps: Dict[str, float]) -> Dict[str, Callable]:
    """The formulations WS could use, to keep the fastest: timm's F.batch_norm over a
    (1, out, in*k*k) view; mmcv's torch.std_mean (Welford). Ours is standardize_weight."""
    out = weight.shape[0]

    def timm_batch_norm(w):
        return F.batch_norm(w.reshape(1, out, -1), None, None, training=True, momentum=0.0,
                            eps=eps["timm"]).reshape_as(w)

    def mmcv_std_mean(w):
        flat = w.reshape(out, -1)
        std, mean = torch.std_mean(flat, dim=1, keepdim=True)
        return ((flat - mean) / (std + eps["mmcv"])).reshape_as(w)

    return {"timm_ours": lambda w: standardize_weight(w, "timm", eps["timm"]),
            "timm_batch_norm": timm_batch_norm,
            "mmcv_ours": lambda w: standardize_weight(w, "mmcv", eps["mmcv"]),
            "mmcv_std_mean": mmcv_std_mean}


def ws_benchmark(quick: bool = False, repeats: int = 3, shapes=CONV_SHAPES,
                 clock: str = "wall") -> Dict:
    """WS conv vs plain conv per R50-FPN conv shape. Train: forward+backward (weight gradient
    included) of a plain Conv2d, WSConv2d timm-style and mmcv-style. Eval (no_grad): plain,
    WSConv2d as used (eval mode), standardizing on every call, and fold_ws'd. Also the
    standardization alone (forward+backward) in our formulation vs timm's and mmcv's.
    `clock`: a timing.CLOCKS name."""
    timer = CLOCKS[clock]
    eps = dict(WS_STYLES)  # each convention's default eps
    rows, totals = {}, {}
    for name, cin, cout, k, h, w in shapes:
        torch.manual_seed(0)
        h, w = _shrink((h, w), quick)
        x = torch.randn(BATCH, cin, h, w)
        kw = dict(padding=k // 2, bias=False)
        plain = Conv2d(cin, cout, k, **kw)
        ws = {s: WSConv2d(cin, cout, k, ws_style=s, **kw) for s in ("timm", "mmcv")}
        for conv in ws.values():
            conv.weight = nn.Parameter(plain.weight.detach().clone())
        grad = torch.randn(BATCH, cout, h, w)
        train = interleaved(
            {"plain": _fwd_bwd(plain, x, grad), "ws_timm": _fwd_bwd(ws["timm"], x, grad),
             "ws_mmcv": _fwd_bwd(ws["mmcv"], x, grad)},
            repeats, label=f"WS train {name} ", clock=timer)
        ws_eval = ws["timm"].eval()
        folded = fold_ws(copy.deepcopy(ws_eval))
        recompute = lambda conv=ws_eval, x=x: conv._conv_forward(  # noqa: E731
            x, standardize_weight(conv.weight, "timm", conv.ws_eps), None)
        evals = interleaved(
            {"plain": _no_grad(plain.eval(), x), "ws": _no_grad(ws_eval, x),
             "ws_recompute": _no_grad(recompute), "folded": _no_grad(folded, x)},
            repeats, label=f"WS eval {name} ", clock=timer)
        std = interleaved(
            {k2: _fwd_bwd_fn(fn, plain.weight.detach()) for k2, fn in
             _standardize_alternatives(plain.weight, eps).items()},
            repeats, label=f"standardize {name} ", clock=timer)
        for group, samples in (("train", train), ("eval", evals), ("standardize", std)):
            for key, values in samples.items():  # summed repeat by repeat: pairs stay pairs
                old = totals.get((group, key), [0.0] * len(values))
                totals[(group, key)] = [a + b for a, b in zip(old, values)]
        rows[f"{name}_{cin}to{cout}_k{k}_{h}x{w}"] = _ws_row(train, evals, std)
    total = {g: {k: v for (g2, k), v in totals.items() if g2 == g}
             for g in ("train", "eval", "standardize")}
    rows["all_shapes_summed"] = _ws_row(total["train"], total["eval"], total["standardize"])
    summed = rows["all_shapes_summed"]
    targets = {"train_ws_timm_vs_plain": 1.05, "eval_ws_vs_plain": 1.02,
               "eval_folded_vs_plain": 1.02}
    return {"batch": BATCH, "repeats": repeats, "clock": clock, "rows": rows, "targets": {
        key: {"summed": summed[key], "ci": summed[f"{key}_ci"], "target": target}
        for key, target in targets.items()}}


def _fwd_bwd_fn(fn: Callable, weight: torch.Tensor) -> Callable[[], None]:
    grad = torch.randn_like(weight)

    def step():
        fn(weight.detach().requires_grad_()).backward(grad)

    return step


def _ms(samples: Dict, prefix: str) -> Dict:
    return {f"{prefix}_{k}_ms": round(v * 1e3, 3) for k, v in medians(samples).items()}


def _ws_row(train: Dict, evals: Dict, std: Dict) -> Dict:
    """Medians (ms) and paired ratios with intervals from the three groups' samples."""
    return {**_ms(train, "train"), **_ms(evals, "eval"), **_ms(std, "standardize"),
            **_ratios(train, {"train_ws_timm_vs_plain": ("ws_timm", "plain"),
                              "train_ws_mmcv_vs_plain": ("ws_mmcv", "plain")}),
            **_ratios(evals, {"eval_ws_vs_plain": ("ws", "plain"),
                              "eval_ws_recompute_vs_plain": ("ws_recompute", "plain"),
                              "eval_folded_vs_plain": ("folded", "plain")}),
            **_ratios(std, {"standardize_timm_ours_vs_batch_norm": ("timm_ours",
                                                                    "timm_batch_norm"),
                            "standardize_mmcv_ours_vs_std_mean": ("mmcv_ours",
                                                                  "mmcv_std_mean")})}
