"""Training in several processes: torchrun and DistributedDataParallel, PyTorch's own engine (no launcher of ours).

    torchrun --no-python --nproc_per_node 2 woof train --config ... --out runs/x        (one machine)
    torchrun --no-python --nnodes 2 --node_rank R --rdzv-backend c10d \
             --rdzv-endpoint HOST:29500 --nproc_per_node 1 woof train ...               (two machines)

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op and training runs in one
process as always. The backend is nccl on CUDA, gloo on CPU. `batch_size` is per process (the effective batch
is batch_size x WORLD_SIZE); the learning rate is not rescaled for you (the linear rule: lr x WORLD_SIZE, with
a warm-up). Only rank 0 writes checkpoints, history, cards and reports, and evaluates the hold-out (unpadded).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (if any); returns this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    cuda = device.type == "cuda"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over every process (a copy on CPU; gloo and nccl both reduce it)."""
    if not active():
        return t
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = t.to(backend_device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def gather_batch(z: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `z`, concatenated in rank order, with gradients flowing back to each process's
    own rows (torch.distributed.nn.functional.all_gather is autograd-aware)."""
    if not active():
        return z
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z.contiguous()), dim=0)


def broadcast_object(value):
    """Rank 0's `value` on every process."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
