"""Running under ``torchrun``: process groups, data shards and reductions, on PyTorch's own engine.

Nothing here is home-made distribution: ``torchrun`` starts the processes and sets RANK,
WORLD_SIZE, LOCAL_RANK and GROUP_RANK (the machine); ``torch.distributed`` (gloo on CPU, NCCL on GPU) and
``DistributedDataParallel`` do the rest. Batch size in the config is the *global* batch:
each of the N processes takes ``batch_size // N`` rows of every step, unless
``distributed.batch`` is ``per_process`` (each takes ``batch_size``; the global batch is N times it).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from tellapart._errors import UserError

from ._config import TrainConfig

__all__ = [
    "DistContext", "process_env", "init_distributed", "shard_order", "rank_config", "lr_factor", "sync_batchnorm",
    "all_reduce_sums", "all_reduce_max", "shutdown",
]

#: A rank waiting longer than this on the others fails instead of hanging forever.
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    node: int = 0  # torchrun's GROUP_RANK: which machine (node rank)
    nodes: int = 1  # torchrun's GROUP_WORLD_SIZE: how many machines

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (run folder, checkpoints, TensorBoard, reports)."""
        return self.rank == 0


def process_env() -> DistContext:
    """Where this process stands, from the variables torchrun sets; the process group is not joined yet."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    env = os.environ
    return DistContext(
        int(env["RANK"]), world, int(env.get("LOCAL_RANK", "0")), int(env.get("GROUP_RANK", "0")), int(env.get("GROUP_WORLD_SIZE", "1"))
    )


def init_distributed(device: torch.device) -> DistContext:
    """Joins the process group torchrun set up (no-op for a single process)."""
    ctx = process_env()
    if not ctx.enabled:
        return ctx
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


def per_rank_batch(batch_size: int, ctx: DistContext, mode: str = "global") -> int:
    """Rows each process takes per step: ``batch_size`` split over the processes, or all of it (``per_process``)."""
    if mode == "per_process":
        return batch_size
    if batch_size % ctx.world:
        raise UserError(
            f"batch_size {batch_size} is the global batch; make it a multiple of the {ctx.world} processes, "
            "or set distributed.batch=per_process to have each process take batch_size rows"
        )
    return batch_size // ctx.world


def lr_factor(scale_lr: str, batch_size: int, global_batch: int) -> float:
    """The learning-rate multiplier for a global batch ``k`` times the configured one: 1, k or sqrt(k).

    Goyal et al. 2017 ("Accurate, Large Minibatch SGD") scale linearly; sqrt is the gentler rule
    often used with Adam. k is 1 when batch_size is already the global batch.
    """
    k = global_batch / batch_size
    return {"none": 1.0, "linear": k, "sqrt": math.sqrt(k)}[scale_lr]


def rank_config(cfg: TrainConfig, ctx: DistContext) -> TrainConfig:
    """The config one process trains with: its own batch size, and the lr scaled to the global batch.

    The run folder and checkpoints keep ``cfg`` as configured, so a resumed run scales once again, the same way.
    """
    mode = cfg.distributed.batch
    batch = per_rank_batch(cfg.batch_size, ctx, mode)
    factor = lr_factor(cfg.distributed.scale_lr, cfg.batch_size, batch * ctx.world)
    optim = dataclasses.replace(cfg.optim, lr=cfg.optim.lr * factor)
    return dataclasses.replace(cfg, batch_size=batch, optim=optim)


def sync_batchnorm(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """BatchNorm layers as ``torch.nn.SyncBatchNorm`` (statistics over the global batch), before DDP wraps the model.

    SyncBatchNorm has BatchNorm's parameters and buffers under the same names, so checkpoints load
    into the plain model for prediction, export and resume. In one process there is nothing to
    synchronise and the model is left as it is. PyTorch's SyncBatchNorm refuses CPU tensors in a
    process group ("expected input tensor to be on GPU"), so CPU runs are refused up front.
    """
    if not ctx.enabled:
        if ctx.is_main:
            print("note: distributed.sync_batchnorm ignored: one process has no other batches to synchronise with", file=sys.stderr)
        return model
    if device.type != "cuda":
        raise UserError(
            f"distributed.sync_batchnorm needs CUDA: PyTorch's SyncBatchNorm does not run on {device.type} tensors (gloo); "
            "train with --set distributed.sync_batchnorm=false (each process normalises its own batch), or on GPUs"
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def all_reduce_sums(values: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Sums each value over all ranks (losses times counts, correct counts, images seen)."""
    if not ctx.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def all_reduce_max(value: int, ctx: DistContext, device: torch.device) -> int:
    """The largest ``value`` over all ranks (e.g. the longest shard, which every rank pads to)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


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
