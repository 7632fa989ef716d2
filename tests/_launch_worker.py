"""Worker for test_launch: run in each spawned process (kept importable by its module name)."""
import torch
import torch.distributed as dist

from detectron2.utils import comm


def all_reduce_worker(out_dir):
    t = torch.tensor([float(comm.get_rank() + 1)])
    dist.all_reduce(t)
    with open(f"{out_dir}/rank{comm.get_rank()}.txt", "w") as f:
        f.write(f"{t.item()} {comm.get_world_size()} {comm.get_local_size()} {dist.get_backend()} "
                f"{torch.get_num_threads()}")


def failing_worker(bad_rank):
    """Rank `bad_rank` fails on bad input; the others wait for it in a collective."""
    if comm.get_rank() == bad_rank:
        raise ValueError("config.yaml: MODEL.NORMS.FPN.TYPE: unknown norm type 'XN'\n(second line)")
    dist.barrier()
