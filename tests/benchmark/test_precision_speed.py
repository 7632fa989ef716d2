"""gn_det.benchmark.precision: the conv FLOP count against the formula, the peak measurement
and the whole benchmark on a tiny problem through the command, with its target lines (no timing
checks)."""
import json

import pytest
import torch
from torch import nn

from gn_det.benchmark import catalog, precision
from gn_det.commands import benchmark as command


def test_conv_flops_counts_forward_and_backward():
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    x = torch.randn(2, 4, 5, 7)
    forward = 2 * (2 * 6 * 5 * 7) * (4 // 2 * 9)  # 2 x outputs x multiply-adds per output
    assert precision.conv_flops(conv, lambda: conv(x)) == forward
    # weight gradient only (the input needs none), then the input gradient too
    assert precision.conv_flops(conv, lambda: conv(x), backward=True) == 2 * forward
    x.requires_grad_()
    assert precision.conv_flops(conv, lambda: conv(x), backward=True) == 3 * forward
    assert not conv._forward_hooks  # the counting hooks are gone


def test_peak_reports_every_kernel_at_each_thread_count():
    result = precision.peak_benchmark(threads=(1,), quick=True, repeats=1)
    row = result["gflops"]["1_threads"]
    assert set(row) == {f"{op}_{dt}{layout}" for dt in ("fp32", "bf16")
                        for op, layout in (("matmul", ""), ("conv", "_nchw"),
                                           ("conv", "_channels_last"))}
    assert all(v > 0 for v in row.values())


@pytest.mark.slow
def test_precision_benchmark_runs_and_prints_its_targets(tmp_path, capsys):
    assert "precision" in catalog.BENCHMARKS
    out = tmp_path / "precision.json"
    assert command.main(["precision", "--quick", "--repeats", "1", "--threads", "1",
                         "--json", str(out)]) == 0
    result = json.loads(out.read_text())["precision"]
    assert result["inference"]["seconds"]["fast"] > 0 and result["training"]["conv_gflop"] > 0
    assert set(result["ratios"]) == {
        "inference fast / fp32", "training fast / fp32",
        "training fast / fp32, both with the loop optimizer step",
        "training fast / fp32 with the loop step",
        "training fused / loop optimizer step, fast path"}
    printed = capsys.readouterr().out
    assert "inference fast / fp32: " in printed and "(target <= 0.25x)" in printed
    assert "training fast / fp32: " in printed and "(target <= 0.30x)" in printed


def test_op_shares_sum_to_one_and_name_the_layers():
    from gn_det.benchmark import op_profile
    from gn_det.layers import WSConv2d

    model = nn.Sequential(WSConv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU())
    x = torch.randn(2, 3, 16, 16)
    original = WSConv2d._standardize
    with op_profile._Labelled(model):
        result = op_profile.op_shares(lambda: model(x).sum().backward(), steps=1)
    assert WSConv2d._standardize is original  # the labels are gone
    shares = result["shares"]
    assert abs(sum(shares.values()) - 1) < 1e-3 and result["ms_per_call"] > 0
    assert {"conv", "GN", "WS", "relu"} <= set(shares)
    table = op_profile.shares_table({"run": result, "machine": {}})
    assert table.splitlines()[0] == "| category | run |" and "| conv | " in table
