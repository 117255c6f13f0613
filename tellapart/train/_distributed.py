"""Running under ``torchrun``: process groups, data shards and reductions, on PyTorch's own engine.

Nothing here is home-made distribution: ``torchrun`` starts the processes and sets RANK,
WORLD_SIZE and LOCAL_RANK; ``torch.distributed`` (gloo on CPU, NCCL on GPU) and
``DistributedDataParallel`` do the rest. Batch size in the config is the *global* batch:
each of the N processes takes ``batch_size // N`` rows of every step.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from tellapart._errors import UserError

__all__ = ["DistContext", "init_distributed", "shard_order", "all_reduce_sums", "shutdown"]

#: A rank waiting longer than this on the others fails instead of hanging forever.
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (run folder, checkpoints, TensorBoard, reports)."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistContext:
    """Joins the process group torchrun set up (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return ctx


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    """Each process on a multi-GPU machine drives the GPU of its local rank."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shard_order(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's rows of an epoch: the order padded (by wrapping) to a multiple of world, strided.

    The same rule as ``torch.utils.data.DistributedSampler``: shards are disjoint up to the
    padding, cover the epoch, and have equal length, so every rank takes the same number of steps.
    """
    if world <= 1:
        return order
    padded = np.concatenate([order, order[: (-len(order)) % world]]) if len(order) % world else order
    return padded[rank::world]


def per_rank_batch(batch_size: int, ctx: DistContext) -> int:
    if batch_size % ctx.world:
        raise UserError(f"batch_size {batch_size} is the global batch; make it a multiple of the {ctx.world} processes")
    return batch_size // ctx.world


def all_reduce_sums(values: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Sums each value over all ranks (losses times counts, correct counts, images seen)."""
    if not ctx.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def broadcast_flag(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Rank 0's decision (e.g. stop) for everybody."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
