"""Data parallelism through ``accelerate launch`` — never a home-made launcher.

Under ``accelerate launch --num_processes N`` each process plays its own share of the episodes and computes
gradients on its own samples. Each process divides its token losses by the *global* token count (summed across
processes), so summing the per-role adapter gradients across processes before each optimiser step gives exactly
the single-process update on the union of the samples; advantage statistics are summed across processes too. Without a launcher everything here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

_ACCELERATOR = None


def init() -> tuple[int, int]:
    """Start the process group when launched by accelerate (or torchrun); return (rank, world size)."""
    global _ACCELERATOR
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        from accelerate import Accelerator

        _ACCELERATOR = Accelerator(cpu=not torch.cuda.is_available())
    return rank(), world_size()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def sum_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum each parameter's gradient over processes (missing grads count as zero); see the module docstring."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
