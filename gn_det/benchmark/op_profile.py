"""Where a training step's or an inference call's time goes (`gn-det-benchmark precision_profile`):
torch.profiler's self time per op, summed into categories (convolution, GN, WS, dtype casts,
layout reorders, ...), fp32 against the bf16 fast path, for the same models as the precision
benchmark. Shares are robust to other processes' load where absolute times are not.

An op's time goes to the category of the nearest op above it (itself included) that has one:
a copy inside `aten::_to_copy` is a cast, inside `aten::contiguous` / `aten::clone` a reorder,
inside a convolution (oneDNN's own weight / input reorders) the convolution.
"""
import collections
import copy
import itertools
from typing import Callable, Dict, Optional

import torch

CATEGORIES = (  # (category, op names), matched from an op up through its callers
    ("cast", ("aten::_to_copy", "aten::to", "ToCopyBackward0")),
    ("reorder", ("aten::contiguous", "aten::clone", "aten::to_dense", "aten::to_mkldnn",
                 "CloneBackward0")),
    ("conv", ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
              "aten::convolution", "aten::conv2d", "ConvolutionBackward0",
              "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::thnn_conv2d")),
    ("GN", ("aten::native_group_norm", "aten::native_group_norm_backward", "aten::group_norm",
            "NativeGroupNormBackward0", "_GroupNormChannelsLast",
            "_GroupNormChannelsLastBackward")),
    ("WS", ("ws_standardize",)),  # a record_function around WSConv2d's standardization
    ("relu", ("aten::relu", "aten::relu_", "aten::threshold_backward", "ReluBackward0")),
    ("upsample / add", ("aten::upsample_nearest2d", "aten::upsample_nearest2d_backward",
                        "aten::add", "aten::add_", "AddBackward0")),
    ("max-pool", ("aten::max_pool2d", "aten::max_pool2d_with_indices",
                  "aten::max_pool2d_with_indices_backward")),
    ("post-processing", ("post-processing",)),
)
_CATEGORY_OF = {name: category for category, names in CATEGORIES for name in names}


def _category(event) -> str:
    while event is not None:
        category = _CATEGORY_OF.get(event.name)
        if category is None and event.name.startswith("Optimizer."):  # torch's own label
            category = "optimizer"
        if category is not None:
            return category
        event = event.cpu_parent
    return "other"


def op_shares(run: Callable[[], object], steps: int = 2) -> Dict:
    """Milliseconds per call and share of the profiled self time per category, over `steps`
    calls of `run` (after one unprofiled call)."""
    from torch.profiler import ProfilerActivity, profile

    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    totals = collections.Counter()
    for event in prof.events():
        if event.device_type.name == "CPU":
            totals[_category(event)] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {"ms_per_call": round(whole / steps / 1e3, 1),
            "shares": {k: round(v / whole, 4) for k, v in totals.most_common()}}


class _Labelled:
    """WSConv2d's standardization, the dense head's post-processing and the optimizer step under
    profiler labels while the block runs (the profile's categories)."""

    def __init__(self, model, optimizer=None):
        self.model, self.optimizer = model, optimizer
        self.undo = []

    def __enter__(self):
        from torch.profiler import record_function

        from ..layers import WSConv2d

        def label(owner, attr, name):
            original = getattr(owner, attr)

            def wrapped(*args, **kwargs):
                with record_function(name):
                    return original(*args, **kwargs)

            setattr(owner, attr, wrapped)
            self.undo.append((owner, attr, original))

        label(WSConv2d, "_standardize", "ws_standardize")
        if hasattr(self.model, "forward_inference"):
            label(self.model, "forward_inference", "post-processing")
        return self

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self.undo):
            if owner is self.model:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


def profile_benchmark(config_dir: str, precision, quick: bool = False,
                      steps: int = 2) -> Dict:
    """Category shares of the precision benchmark's inference (R50 GN+WS, one image) and
    training step (real-data R-18 GN+WS, 2 images), fp32 and `precision`."""
    from detectron2.utils.events import EventStorage

    from ..engine.accumulation import AccumulatingTrainer
    from ..engine.optimizer import build_optimizer
    from ..engine.precision import Precision, prepare_for_inference
    from . import precision as bench

    result = {}
    size = bench.QUICK_INFERENCE_SIZE if quick else bench.INFERENCE_SIZE
    _, model = bench._load(config_dir, bench.INFERENCE_CONFIG, size)
    model.eval()
    inputs = [{"image": torch.rand(3, *size, generator=torch.Generator().manual_seed(1)) * 255}]
    for name, net in (("fp32", model),
                      ("fast", prepare_for_inference(copy.deepcopy(model), precision))):
        def infer(net=net):
            with torch.no_grad():
                return net(inputs)
        with _Labelled(net):
            result[f"inference {name}"] = op_shares(infer, steps)
    size = bench.QUICK_TRAINING_SIZE if quick else bench.TRAINING_SIZE
    cfg, model = bench._load(config_dir, bench.TRAINING_CONFIG, size)
    batch = bench._training_batch(cfg, size, bench.TRAINING_BATCH)
    for name, prec in (("fp32", Precision("fp32")), ("fast", precision)):
        net = copy.deepcopy(model)
        trainer = AccumulatingTrainer(net, itertools.repeat(batch), build_optimizer(cfg, net),
                                      1, precision=prec)
        with EventStorage(0), _Labelled(net):
            result[f"training {name}"] = op_shares(trainer.run_step, steps)
    return result


def shares_table(result: Dict, categories: Optional[tuple] = None) -> str:
    """A markdown table: one row per category, one column per profiled run."""
    runs = [k for k, v in result.items() if isinstance(v, dict) and "shares" in v]
    categories = categories or tuple(dict.fromkeys(
        k for r in runs for k in result[r]["shares"]))
    lines = ["| category | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for c in categories:
        lines.append(f"| {c} | " + " | ".join(
            f"{100 * result[r]['shares'].get(c, 0):.1f}%" for r in runs) + " |")
    lines.append("| ms per call (profiled) | " + " | ".join(
        f"{result[r]['ms_per_call']:.0f}" for r in runs) + " |")
    return "\n".join(lines)
