"""gn_det.engine.launch: the CPU (gloo) path, its guard both ways, and user errors in a rank
coming back as one line."""
import importlib
import os

import pytest
import torch
import torch.multiprocessing as mp

from gn_det.compat import needs_cpu_launch
from gn_det.engine import launch
from gn_det.engine.launch import RankError, threads_per_process

from _launch_worker import all_reduce_worker, failing_worker


def test_guard_both_ways():
    v06 = 'dist.init_process_group(backend="NCCL", init_method=dist_url)'
    main = 'dist.init_process_group(backend="NCCL" if has_gpu else "GLOO", init_method=dist_url)'
    assert needs_cpu_launch(False, v06)
    assert not needs_cpu_launch(False, main)
    assert not needs_cpu_launch(True, v06)


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU path")
def test_two_cpu_processes_all_reduce_sharing_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    launch(all_reduce_worker, 2, dist_url="auto", args=(str(tmp_path),))
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == f"3.0 2 2 gloo {share}"


def test_threads_per_process_follows_omp_num_threads(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [threads_per_process(n) for n in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_process(2) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU path")
def test_user_error_in_a_rank_is_one_line(monkeypatch):
    monkeypatch.delenv("GN_DET_DEBUG", raising=False)
    with pytest.raises(RankError) as info:  # rank 0 waits in a barrier: it is stopped, not hung
        launch(failing_worker, 2, dist_url="auto", args=(1,))
    assert str(info.value) == ("rank 1: config.yaml: MODEL.NORMS.FPN.TYPE: unknown norm type "
                               "'XN' (second line)")
    assert info.value.type_name == "ValueError" and isinstance(info.value, ValueError)
    monkeypatch.setenv("GN_DET_DEBUG", "1")  # --debug: the child's own traceback, as torch gives it
    with pytest.raises(mp.ProcessRaisedException, match=r"(?s)Traceback.*ValueError: config.yaml"):
        launch(failing_worker, 2, dist_url="auto", args=(1,))


def test_bad_launch_arguments_are_user_errors(monkeypatch):
    """Checked here, before spawning: detectron2 asserts them inside each child process."""
    launch_module = importlib.import_module("gn_det.engine.launch")  # the function shadows it
    monkeypatch.setattr(launch_module, "needs_cpu_launch", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"^--num-gpus 2: this machine has 1 CUDA device\(s\)"):
        launch(all_reduce_worker, 2, args=("unused",))
    with pytest.raises(ValueError, match=r"^--dist-url auto works on one machine only"):
        launch(all_reduce_worker, 1, num_machines=2, dist_url="auto", args=("unused",))
