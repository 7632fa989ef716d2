"""gn_det.engine.launch: CUDA or CPU (gloo) from what the machine has, user errors in a rank and
lost ranks coming back as one line."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
import torch.multiprocessing as mp

from gn_det.engine import launch
from gn_det.engine.launch import RankError, cuda_processes, lost_peer_message, threads_per_process

from _launch_worker import all_reduce_worker, failing_worker
from helpers import REPO, TOY_CONFIG, free_port, kill_with_children

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]  # launches several gloo processes


def test_the_machine_decides_cuda_or_cpu():
    """No CUDA device: gloo CPU processes (on v0.6 and main alike); CUDA: detectron2's launcher,
    one device per process."""
    assert cuda_processes(2, cuda_devices=0) is False
    assert cuda_processes(2, cuda_devices=2) is True and cuda_processes(1, cuda_devices=8) is True
    with pytest.raises(ValueError, match=r"^--num-gpus 3: this machine has 2 CUDA device\(s\); "
                                         r"expected at most that many \(CUDA_VISIBLE_DEVICES= "
                                         r"runs CPU processes instead\)"):
        cuda_processes(3, cuda_devices=2)


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
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"^--num-gpus 2: this machine has 1 CUDA device\(s\)"):
        launch(all_reduce_worker, 2, args=("unused",))
    with pytest.raises(ValueError, match=r"^--dist-url auto works on one machine only"):
        launch(all_reduce_worker, 1, num_machines=2, dist_url="auto", args=("unused",))


GLOO_RESET = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
              "[127.0.0.1]:36772: Connection reset by peer. This is typically caused by a remote "
              "worker hanging or bugs in the application. Check the logs of the remote worker "
              "before reporting an error. GLHF!")


def test_lost_peer_message_names_the_rank():
    assert lost_peer_message(RuntimeError(GLOO_RESET), 0, 2) == (
        "lost rank 1 (gloo: Read error [127.0.0.1]:36772: Connection reset by peer.): it died or "
        "its machine went away; stopping instead of waiting for the collective timeout")
    assert lost_peer_message(RuntimeError(GLOO_RESET), 3, 4).startswith("lost another rank (gloo")
    assert lost_peer_message(RuntimeError("CUDA out of memory"), 0, 2) is None  # a bug: traceback
    assert lost_peer_message(ValueError(GLOO_RESET), 0, 2) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU gloo path")
def test_sigkill_of_one_machine_is_one_line_on_the_other(tiny_train_opts, tmp_path):
    """Two train_net commands over loopback; SIGKILL rank 1 mid-training: both commands exit
    non-zero at once (not after the 30-minute collective timeout), each with one line naming
    rank 1."""
    url = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the two "machines" share this one's cores
    commands = [
        subprocess.Popen([sys.executable, str(REPO / "tools/train_net.py"), "--config-file",
                          TOY_CONFIG, "--num-gpus", "1", "--num-machines", "2", "--machine-rank",
                          str(rank), "--dist-url", url, *tiny_train_opts, "SOLVER.MAX_ITER",
                          "1000", "OUTPUT_DIR", str(tmp_path / f"m{rank}")],
                         cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
        for rank in (0, 1)]
    try:
        deadline = time.time() + 400
        while not (tmp_path / "m0" / "last_checkpoint").exists():  # rank 0 trained 2 iterations
            assert time.time() < deadline and all(c.poll() is None for c in commands)
            time.sleep(0.2)
        (rank1,) = [p for p in psutil.Process(commands[1].pid).children()
                    if "spawn_main" in " ".join(p.cmdline())]
        rank1.send_signal(signal.SIGKILL)
        killed = time.time()
        _, err0 = commands[0].communicate(timeout=60)
        _, err1 = commands[1].communicate(timeout=60)
        assert time.time() - killed < 60
    finally:
        kill_with_children(commands)
    assert commands[0].returncode == 2 and commands[1].returncode == 2
    assert err0.strip().splitlines()[-1].startswith(
        "train_net: error: rank 0: lost rank 1 (gloo: "), err0[-3000:]
    assert err1.strip().splitlines()[-1].startswith(
        f"train_net: error: rank 1: process {rank1.pid} was killed by signal SIGKILL"), err1[-3000:]
    assert "Traceback" not in err0 + err1
    assert "Traceback" not in (tmp_path / "m0" / "log.txt").read_text()  # one line in the log too
