"""More than one process: ``torchrun --nproc_per_node=N -m seqlab train CONFIG``.

torchrun starts N copies of the trainer and tells each its RANK, LOCAL_RANK and WORLD_SIZE.
Every process builds the same model from the same seed, reads the same seeded batch order and
trains on its own share of each step's batches; DistributedDataParallel sums the gradients
(gloo on CPU, NCCL on CUDA). Rank 0 alone writes logs and checkpoints, and decides when to stop.
Without torchrun (WORLD_SIZE unset or 1) nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    host_group: Any = None  # gloo, for the host's decisions when the default group is NCCL; None: the default

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def start(device: torch.device) -> tuple[Processes, torch.device]:
    """Join the process group torchrun set up (if any); each CUDA process takes its own GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(), device
    procs = Processes(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(procs.local_rank)
        device = torch.device("cuda", procs.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.get_backend() == "nccl":  # every process takes part in making the group
        procs.host_group = dist.new_group(backend="gloo")
    return procs, device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_across(values: list[float], procs: Processes, device: torch.device) -> list[float]:
    """Element-wise sum over processes (one small all-reduce); the values themselves with one process."""
    if not procs.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def from_main(value: int, procs: Processes) -> int:
    """Rank 0's value on every process: a decision (whether to stop) must be the same everywhere.

    Taken at every step, so it goes host to host (gloo): through NCCL the value would be a GPU
    tensor, and reading it back would make each step wait for the GPU."""
    if not procs.active:
        return value
    t = torch.tensor([value], dtype=torch.long)
    dist.broadcast(t, src=0, group=procs.host_group)
    return int(t.item())


def gather(value, procs: Processes) -> list:
    """Every process's ``value`` (any picklable object), in rank order, on every process."""
    if not procs.active:
        return [value]
    values: list = [None] * procs.world
    dist.all_gather_object(values, value)
    return values


def gather_rng(procs: Processes) -> list[torch.Tensor]:
    """Every process's torch RNG state, for rank 0's checkpoint (each resumes with its own)."""
    return gather(torch.get_rng_state(), procs)


def barrier(procs: Processes) -> None:
    if procs.active:
        dist.barrier()
