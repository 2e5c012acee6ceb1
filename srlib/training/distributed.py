"""Several processes, one run: torchrun's process group and the helpers `fit` uses under DDP.

`torchrun --nproc_per_node N -m srlib train ...` runs one process per GPU (or CPU workers over
gloo); `distributed_setup()` joins them. Every helper here is a no-op in a single process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def distributed_setup(backend: str | None = None) -> tuple[int, int]:
    """Join torchrun's process group if launched by torchrun; returns (rank, world_size).

    torchrun sets RANK, WORLD_SIZE and LOCAL_RANK: the group is initialised once, with
    `backend` ("nccl", "gloo"; None: NCCL when CUDA is available, else gloo), and under NCCL
    each process takes GPU LOCAL_RANK. Pass "gloo" to train on the CPU of a CUDA machine.
    Calling it again, or after the caller made the group itself, just reports it. Without
    torchrun: (0, 1).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not dist.is_available() or not {"RANK", "WORLD_SIZE", "LOCAL_RANK"} <= set(os.environ):
        return 0, 1
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def rank_and_world() -> tuple[int, int]:
    """(rank, world_size) of an initialised process group, else (0, 1); initialises nothing."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True in a single process and on rank 0: the one process that writes files and prints."""
    return rank_and_world()[0] == 0


def process_device(device: torch.device) -> torch.device:
    """This DDP process's device: GPU LOCAL_RANK on CUDA, else the CPU (gloo has no MPS)."""
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if dist.get_backend() == "nccl":
        raise ValueError(
            f"device {device} cannot train under NCCL, which reduces CUDA tensors only: "
            "use device 'auto' or 'cuda', or a gloo process group for the CPU"
        )
    return torch.device("cpu")


# (the default process group, the gloo group `control_group` made for it), made once.
_control: tuple[object, object] | None = None


def control_group() -> dist.ProcessGroup | None:
    """fit's group for small CPU messages (stop flags, clocks, the checkpoint); None: default.

    Under NCCL a gloo group, made once per default process group: reading an NCCL result every
    step would make the CPU wait for the GPU every step. As for any new group, every process
    must first ask for it at the same point.
    """
    global _control
    if dist.get_backend() == "gloo":
        return None
    if _control is None or _control[0] is not dist.group.WORLD:
        _control = (dist.group.WORLD, dist.new_group(backend="gloo"))
    return _control[1]


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as DistributedDataParallel: what each training step calls under DDP."""
    # DDP copies rank 0's weights and buffers to all processes here and averages the gradients
    # of the trainable parameters only: a frozen encoder takes no part (and its BatchNorm stays
    # in eval mode, see ResNetEncoder).
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def agree(stop_asked: bool, seconds: float, world: int) -> tuple[bool, float]:
    """Any process's stop request and the slowest clock, the same in every process."""
    if world == 1:
        return stop_asked, seconds
    both = torch.tensor([float(stop_asked), seconds], dtype=torch.float64)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=control_group())
    return bool(both[0]), float(both[1])


def gather_losses(pending: list[torch.Tensor], world: int) -> list[list[float]]:
    """Steps' loss parts, (n_steps, 1 + n_parts), as floats; under DDP averaged over processes."""
    rows = torch.stack(pending)
    if world > 1:
        dist.all_reduce(rows)  # each process's mean over its equal share of the batch...
        rows /= world  # ...averaged: the global batch's mean, the same in every process
    return rows.tolist()  # one device sync


def means(sums: list[torch.Tensor], n: int, across_ranks: bool) -> list[float]:
    """sums / n, with sums and n first added over the processes of a DDP job if asked."""
    total = torch.stack([*sums, torch.tensor(float(n), device=sums[0].device)])
    if across_ranks:
        dist.all_reduce(total)
    *sums_, n_ = total.tolist()  # one device sync
    return [s / n_ for s in sums_]


def broadcast(box: list) -> None:
    """Replace `box`'s items in every process by rank 0's (pickled between the job's processes)."""
    dist.broadcast_object_list(box, src=0, group=control_group())
