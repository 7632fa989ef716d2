"""`launch`: detectron2's multi-process launcher on CUDA, gloo processes on a machine without CUDA.

What the machine has decides, not which detectron2 is installed: with CUDA, detectron2's own
launcher (one process per device, NCCL); without, `--num-gpus N` starts N gloo processes per
machine, each with its share of the cores as torch threads (as torchrun does) unless
OMP_NUM_THREADS says. (detectron2 main's launcher also falls back to gloo without CUDA, but gives
every process all the cores; v0.6's asserts CUDA.) Either way, from any process:
- a user error (gn_det.utils.errors.USER_ERRORS) comes back to the caller as one `RankError`
  line, not as the child's traceback (unless --debug / GN_DET_DEBUG);
- a lost peer (gloo's connection errors when another rank died, e.g. SIGKILL) ends that process
  at once with one `RankLost` line naming the lost rank, instead of a traceback; a process of
  this machine killed by a signal is one `RankLost` line too.
"""
import functools
import importlib
import logging
import os
import re
import sys
from typing import Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.utils import comm

from ..utils.errors import (EXIT_USER_ERROR, ONE_LINE_FAILURES, USER_ERRORS, debug_requested,
                            one_line)

# The module, not the function `detectron2.engine.launch` that shadows it as an attribute.
d2_launch_module = importlib.import_module("detectron2.engine.launch")
DEFAULT_TIMEOUT = d2_launch_module.DEFAULT_TIMEOUT
EXIT_LOST_PEER = 3
logger = logging.getLogger(__name__)


class _RankLine:
    """An error of one launched process, as one line naming its rank."""

    def __init__(self, rank: int, type_name: str, message: str):
        self.rank, self.type_name = rank, type_name
        super().__init__(f"rank {rank}: {message}")


class RankError(_RankLine, ValueError):
    """A user error raised in one of the launched processes."""


class RankLost(_RankLine, ConnectionError):
    """A launched process that died (killed by a signal) or lost another rank."""


def cuda_processes(procs_per_machine: int, cuda_devices: Optional[int] = None) -> bool:
    """Whether this machine's processes run on CUDA (detectron2's launcher: one device each) or,
    with no CUDA device, on CPU (gloo). More processes than CUDA devices is refused."""
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_devices and procs_per_machine > cuda_devices:  # detectron2 asserts in each child
        raise ValueError(f"--num-gpus {procs_per_machine}: this machine has {cuda_devices} CUDA "
                         f"device(s); expected at most that many (CUDA_VISIBLE_DEVICES= runs "
                         f"CPU processes instead)")
    return cuda_devices > 0


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None,
           args=(), timeout=DEFAULT_TIMEOUT):
    """Same signature and meaning as `detectron2.engine.launch`; on CPU, `num_gpus_per_machine`
    is the number of processes per machine."""
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    on_gpus = cuda_processes(num_gpus_per_machine)
    if dist_url == "auto" and num_machines != 1:
        raise ValueError("--dist-url auto works on one machine only; pass tcp://HOST:PORT")
    errors = mp.get_context("spawn").SimpleQueue()
    worker = functools.partial(_report_errors, errors, debug_requested(), main_func)
    try:
        if on_gpus:
            return d2_launch_module.launch(worker, num_gpus_per_machine, num_machines,
                                           machine_rank, dist_url, args=args, timeout=timeout)
        _launch_cpu(worker, num_gpus_per_machine, num_machines, machine_rank, dist_url, args,
                    timeout)
    except mp.ProcessExitedException as e:
        if not errors.empty():
            rank, type_name, message = errors.get()
            raise (RankLost if type_name == RankLost.__name__ else RankError)(
                rank, type_name, message) from None
        if e.signal_name:
            rank = machine_rank * num_gpus_per_machine + e.error_index
            raise RankLost(rank, "signal", f"process {e.error_pid} was killed by signal "
                                           f"{e.signal_name}") from None
        raise


# What gloo's TCP transport says when the other end of a connection is gone (the peer died, or
# its machine went away): these end the process with one line instead of a traceback.
_GLOO_LOST_PEER = re.compile(r"gloo/transport/\S*\] (.*?)(?: This is typically caused.*)?$", re.S)


def lost_peer_message(exc: BaseException, rank: int, world_size: int) -> Optional[str]:
    """One line naming the rank this process lost, when `exc` is gloo's connection error (the
    peer of a 2-process world is the other rank; in larger worlds gloo names its address only)."""
    match = _GLOO_LOST_PEER.search(str(exc)) if isinstance(exc, RuntimeError) else None
    if match is None:
        return None
    peer = f"rank {1 - rank}" if world_size == 2 else "another rank"
    return (f"lost {peer} (gloo: {' '.join(match.group(1).split())}): it died or its machine "
            f"went away; stopping instead of waiting for the collective timeout")


ONE_LINE_FAILURES.append(lambda e: lost_peer_message(e, 0, 1) is not None)


def _report_errors(errors, debug, main_func, *args):
    """Run `main_func` in a launched process; a user error or a lost peer is reported to the
    launcher as (rank, type, one line) and ends the process (exit status 2 or 3), which stops
    the others of this machine."""
    try:
        return main_func(*args)
    except USER_ERRORS as e:
        if debug:
            raise
        errors.put((comm.get_rank(), type(e).__name__, one_line(e)))
        sys.exit(EXIT_USER_ERROR)
    except RuntimeError as e:
        message = None if debug else lost_peer_message(e, comm.get_rank(), comm.get_world_size())
        if message is None:
            raise
        errors.put((comm.get_rank(), RankLost.__name__, message))
        sys.exit(EXIT_LOST_PEER)


def _launch_cpu(main_func, procs_per_machine, num_machines, machine_rank, dist_url, args,
                timeout):
    if dist_url == "auto":
        dist_url = f"tcp://127.0.0.1:{d2_launch_module._find_free_port()}"
    logger.info("launching %d CPU processes per machine with gloo (%s)", procs_per_machine,
                dist_url)
    mp.start_processes(_cpu_worker, nprocs=procs_per_machine, daemon=False, start_method="spawn",
                       args=(main_func, num_machines * procs_per_machine, procs_per_machine,
                             machine_rank, dist_url, args, timeout))


def _cpu_worker(local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url,
                args, timeout):
    rank = machine_rank * procs_per_machine + local_rank
    torch.set_num_threads(threads_per_process(procs_per_machine))
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank,
                            timeout=timeout)
    _create_local_process_group(procs_per_machine)
    comm.synchronize()
    main_func(*args)
    # An orderly shutdown: every rank done before any closes its connections, then gloo's threads
    # stopped before interpreter exit (left running, a rank whose peer exited first can abort at
    # exit with "terminate called without an active exception", i.e. SIGABRT after success).
    comm.synchronize()
    dist.destroy_process_group()


def threads_per_process(procs_per_machine: int) -> int:
    """OMP_NUM_THREADS when set; otherwise this machine's usable cores split evenly over its
    processes: N processes each using every core would oversubscribe the CPU N times."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // procs_per_machine)


def _create_local_process_group(procs_per_machine):
    """The group of ranks on this machine, through whichever API this detectron2 has."""
    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(procs_per_machine)
        return
    machine_rank = dist.get_rank() // procs_per_machine
    for i in range(dist.get_world_size() // procs_per_machine):
        group = dist.new_group(list(range(i * procs_per_machine, (i + 1) * procs_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
