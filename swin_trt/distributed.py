"""torch.distributed set-up for torchrun (NCCL on GPUs, gloo on CPU) and metric reduction."""
from __future__ import annotations

import os
from typing import Tuple

import torch
import torch.distributed as dist

from swin_trt.errors import UserError

BACKEND_ENV = "SWIN_DIST_BACKEND"  # nccl (default with GPUs) or gloo (CPU, or several processes sharing a GPU)


def init_distributed(device_arg: str = "auto") -> Tuple[torch.device, int, int]:
    """Start the process group when launched by torchrun; pick the device (rank ``LOCAL_RANK`` takes GPU LOCAL_RANK).

    The backend is NCCL with GPUs and gloo without; ``SWIN_DIST_BACKEND=gloo`` lets several processes share one GPU.

    Returns:
        (device, rank, world_size); (device, 0, 1) outside torchrun.

    Raises:
        UserError: an unknown backend, or more NCCL processes than GPUs.
    """
    use_cuda = torch.cuda.is_available() and device_arg in ("auto", "cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = os.environ.get(BACKEND_ENV) or ("nccl" if use_cuda else "gloo")
        if backend not in ("nccl", "gloo"):
            raise UserError(f"{BACKEND_ENV}={backend!r} is not a backend here: use nccl or gloo.")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        if backend == "nccl" and local_world > torch.cuda.device_count():
            raise UserError(f"{local_world} processes on a machine with {torch.cuda.device_count()} GPU(s): NCCL needs "
                            f"one GPU per process; pass --nproc_per_node {torch.cuda.device_count()}, or set "
                            f"{BACKEND_ENV}=gloo to share GPUs (slow; for testing).")
        dist.init_process_group(backend)
    return device, rank, world_size


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a float64 tensor over ranks (identity outside torch.distributed)."""
    if is_distributed():
        # NCCL reduces CUDA tensors only; gloo takes CPU tensors
        on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else values.device
        summed = values.to(on, copy=True)
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        values = summed.to(values.device)
    return values


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
