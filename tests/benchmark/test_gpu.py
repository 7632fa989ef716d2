"""gn_det.benchmark.gpu: without CUDA `gn-det-benchmark gpu` refuses in one line; `--device cpu
--quick` runs the whole benchmark's code (both models, both batch sizes, every norm and every
precision the CPU has, training, inference, ratios, tables) on tiny sizes; the tables put the
zoo's reference beside the measured ratios."""
import math

import pytest
import torch

from gn_det.benchmark import gpu
from gn_det.cli import run_cli
from gn_det.commands import benchmark as command


def one_error_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: command.main(argv), "benchmark")
    assert exit_info.value.code != 0
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_refuses_in_one_line(capsys):
    line = one_error_line(["gpu"], capsys)
    assert "needs CUDA" in line and "--device cpu --quick" in line
    assert "needs CUDA" in one_error_line(["gpu", "--device", "cpu"], capsys)
    assert "not a torch device" in one_error_line(["gpu", "--device", "tpu:x"], capsys)


def test_zoo_ratios_are_the_tables():
    """GN / FrozenBN from the zoo's Mask R50-FPN 3x rows: 1.36x time, 2.15x memory, 1.60x
    inference."""
    assert gpu.zoo_ratios()["GN / FrozenBN"] == {"train": 1.36, "memory": 2.15,
                                                  "inference": 1.6}


@pytest.fixture
def one_thread():
    """The quick run times nothing that is checked: one torch thread, which on a shared 2-core
    machine ran it in 21 s instead of 250 s (two threads stall on each other under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_quick_cpu_run_covers_the_code_path(one_thread):
    """Every cell of both models filled (no loss overflowed), fp16 reported as CUDA-only,
    detections from random weights (score threshold 0), ratios against FrozenBN and fp32, and tables
    with the zoo's row beside each model's."""
    result = gpu.gpu_benchmark("cpu", quick=True, repeats=1)
    # bf16 runs only where the CPU has bf16 units; elsewhere its row holds the reason
    names = [n for n, p in gpu.precisions_on(torch.device("cpu")).items()
             if not isinstance(p, str)]
    assert "fp32" in names and "CUDA only" in result["precisions"]["fp16"]
    assert result["size"] == list(gpu.QUICK_SIZE)
    for arch in gpu.MODELS:
        for batch in ("1", "2"):
            cells = result["train"][arch][batch]
            assert sorted(cells) == sorted(f"{n}/{p}" for n in gpu.NORMS for p in names)
            for key, cell in cells.items():
                assert cell["s_per_iter"] > 0 and cell["peak_memory_gb"] is None, (arch, key)
            ratios = result["ratios"][f"{arch} train, {batch} img/GPU"]
            assert {"GN / FrozenBN, fp32", "GN+WS / FrozenBN, fp32"} <= set(ratios)
            assert all(math.isfinite(r["time"]) for r in ratios.values())
        for key, cell in result["inference"][arch].items():
            # a random network scores every box ~0.01: detections at all mean the score
            # threshold 0 took effect (at 800x1333 that is 100 per image; at 64x96 NMS merges
            # the anchors clipped to the tiny image)
            assert cell["s_per_image"] > 0 and cell["detections"] > 0, (arch, key)
    if "bf16" in names:
        assert "bf16 / fp32, GN" in result["ratios"]["mask_rcnn inference"]
    tables = result["tables"]
    assert tables.count("| zoo Mask R50-FPN 3x (V100) |") == 2
    assert "0.356 (1.36x)" in tables and "7.3 (2.15x)" in tables and "0.069 (1.6x)" in tables
    assert "| mask_rcnn | 2 | fp32 |" in tables and "| retinanet | fp32 |" in tables
