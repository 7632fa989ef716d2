"""gn_det.engine.launch: the CPU (gloo) path, and its guard both ways."""
import pytest
import torch

from gn_det.compat import needs_cpu_launch
from gn_det.engine import launch

from _launch_worker import all_reduce_worker


def test_guard_both_ways():
    v06 = 'dist.init_process_group(backend="NCCL", init_method=dist_url)'
    main = 'dist.init_process_group(backend="NCCL" if has_gpu else "GLOO", init_method=dist_url)'
    assert needs_cpu_launch(False, v06)
    assert not needs_cpu_launch(False, main)
    assert not needs_cpu_launch(True, v06)


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU path")
def test_two_cpu_processes_all_reduce(tmp_path):
    launch(all_reduce_worker, 2, dist_url="auto", args=(str(tmp_path),))
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "3.0 2 2 gloo"
