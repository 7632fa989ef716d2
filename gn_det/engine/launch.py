"""`launch`: detectron2's multi-process launcher, plus the CPU (gloo) path v0.6 lacks.

detectron2 v0.6's worker hard-codes NCCL and asserts CUDA; main falls back to GLOO itself. Where
detectron2's own launcher can run (CUDA present, or a launcher that knows gloo) it is used as is;
otherwise `--num-gpus N` on a CPU machine starts N gloo processes per machine, each with its
share of the cores as torch threads (as torchrun does) unless OMP_NUM_THREADS says. Either way, a
user error in any process (gn_det.cli.USER_ERRORS) comes back to the caller as one `RankError`
line, not as the child's traceback (unless --debug / GN_DET_DEBUG).
"""
import functools
import importlib
import logging
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.utils import comm

from ..cli import EXIT_USER_ERROR, USER_ERRORS, debug_requested, one_line
from ..compat import needs_cpu_launch

# The module, not the function `detectron2.engine.launch` that shadows it as an attribute.
d2_launch_module = importlib.import_module("detectron2.engine.launch")
DEFAULT_TIMEOUT = d2_launch_module.DEFAULT_TIMEOUT
logger = logging.getLogger(__name__)


class RankError(ValueError):
    """A user error raised in one of the launched processes, as one line naming the rank."""

    def __init__(self, rank: int, type_name: str, message: str):
        self.rank, self.type_name = rank, type_name
        super().__init__(f"rank {rank}: {message}")


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None,
           args=(), timeout=DEFAULT_TIMEOUT):
    """Same signature and meaning as `detectron2.engine.launch`; on CPU, `num_gpus_per_machine`
    is the number of processes per machine."""
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    on_gpus = not needs_cpu_launch()
    if on_gpus and num_gpus_per_machine > torch.cuda.device_count():  # d2 asserts in each child
        raise ValueError(f"--num-gpus {num_gpus_per_machine}: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s); expected at most that many")
    if dist_url == "auto" and num_machines != 1:
        raise ValueError("--dist-url auto works on one machine only; pass tcp://HOST:PORT")
    errors = mp.get_context("spawn").SimpleQueue()
    worker = functools.partial(_report_user_errors, errors, debug_requested(), main_func)
    try:
        if on_gpus:
            return d2_launch_module.launch(worker, num_gpus_per_machine, num_machines,
                                           machine_rank, dist_url, args=args, timeout=timeout)
        _launch_cpu(worker, num_gpus_per_machine, num_machines, machine_rank, dist_url, args,
                    timeout)
    except mp.ProcessExitedException:
        if errors.empty():
            raise
        raise RankError(*errors.get()) from None


def _report_user_errors(errors, debug, main_func, *args):
    """Run `main_func` in a launched process; a user error is reported to the launcher as
    (rank, type, one line) and ends the process with exit status 2, which stops the others."""
    try:
        return main_func(*args)
    except USER_ERRORS as e:
        if debug:
            raise
        errors.put((comm.get_rank(), type(e).__name__, one_line(e)))
        sys.exit(EXIT_USER_ERROR)


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
