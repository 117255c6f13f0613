"""``train``: one run from a cache to a run folder (config, ledger, curves, checkpoints), resumable.

The run folder's layout and its resume-or-restart rule belong to :class:`tellapart.runs.RunDir`;
``train`` composes named parts: the builders (``_builders``), a :class:`Checkpointer`, and the
epoch loop with early stopping as an epoch hook (``_epochs``).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tellapart._errors import UserError
from tellapart._log import get_logger
from tellapart.data import Cache, PartShare, ShardSet, is_shard_set
from tellapart.models import Classifier
from tellapart.runs import RunDir, Start

from ._builders import (
    build_model_for, build_optimizer, class_weights, compile_error, compile_failed, compile_in_place, feeder_for, runtime_for,
)
from ._checkpoint import fault_point, load_model, read_checkpoint
from ._checkpointer import Checkpointer
from ._config import TrainConfig, config_from_dict, config_to_dict, yaml_load
from ._device import Runtime, environment_ledger
from ._distributed import (
    DistContext, all_reduce_max, barrier, init_distributed, local_device, process_env, rank_config, shutdown, sync_batchnorm,
)
from ._epochs import EpochHook, Session, epoch_rows, log_tensorboard, open_tensorboard, read_metrics, run_epochs, write_metrics_csv
from ._finetune import FineTune
from ._loop import TrainState

__all__ = ["RunResult", "train", "nested_subset", "read_metrics", "EpochHook"]

log = get_logger("tellapart.train")



@dataclass(frozen=True)
class RunResult:
    out: Path
    model: Classifier  # best weights when early stopping restores them, else the last
    history: list[dict[str, Any]]
    best_epoch: int
    best: dict[str, Any]  # the best epoch's row
    summary: dict[str, Any]


def nested_subset(rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A stratified subset of ``rows``; for a fixed seed a smaller fraction is inside a larger one."""
    if fraction >= 1.0:
        return np.asarray(rows)
    rng = np.random.default_rng([seed, 7919])  # independent of the run seed: same subsets for every trial
    keep = []
    for label in np.unique(labels[rows]):
        members = rows[labels[rows] == label]
        members = members[rng.permutation(len(members))]
        keep.append(members[: max(1, math.ceil(fraction * len(members)))])
    return np.sort(np.concatenate(keep))


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Set both ways: the setting is process-wide and must not leak into the next run in this process.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = False


def train(
    cache: Cache | str | Path,
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool | None = False,
    on_epoch_end: EpochHook | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    init_state_dict: dict[str, torch.Tensor] | None = None,
    train_splits: tuple[str, ...] = ("train",),
) -> RunResult:
    """Trains ``cfg`` on the cache's train split, selecting on val (the test split is never read).

    Args:
        cache: a prepared cache (or its folder), or under torchrun a shard set folder written by
            ``tellapart.data.shard_cache`` (each process then reads its own part).
        cfg: the resolved training config.
        out: run folder; must be new or empty unless ``resume``.
        resume: True: continue the run in ``out`` with the config it started with (one stopped before
            its first checkpoint starts over; one that stopped early stays stopped). None: whatever
            finishes the run, reading a finished one back (ladders, trials, fit). See ``RunDir.begin``.
        on_epoch_end: ``(epoch, row) -> stop?`` called after every epoch.
        init_state_dict: starting weights for a new run (tuning continues a promoted trial on more data).
        train_splits: the splits to train on; with ``("train", "val")`` there is no validation, so the
            run trains ``cfg.epochs`` epochs (tuning's final retraining of the chosen configuration).
    """
    cache, share = _open_data(cache)  # a shard set: this process's part (under torchrun)
    fingerprint = share.fingerprint if share else cache.fingerprint  # what resume and evaluation check
    run = RunDir(Path(out))
    start = run.begin(resume=resume)
    if start is Start.DONE:
        return _read_back(run)
    cfg, saved = _starting_point(run, start, cfg, fingerprint, progress)
    _seed_everything(cfg.seed, cfg.deterministic)
    s = _set_up(run, cache, share, cfg, train_splits, fingerprint, progress)
    if saved is not None:
        s.checkpointer.restore(saved, s.state)
        s.say(f"resuming {run.path} at epoch {s.state.epoch + 1}, batch {s.state.batch} of {s.steps_per_epoch}")
        if s.ctx.is_main:  # a kill after last.pt but before metrics.csv: the checkpoint's history is the record
            write_metrics_csv(run.metrics_csv, s.state.history)
    elif s.ctx.is_main:
        if init_state_dict is not None:
            s.checkpointer.model.load_state_dict(init_state_dict)
        _write_start_files(s, cache, share, fingerprint, train_splits)
    writer = open_tensorboard(run.path, s.state.epoch) if tensorboard and s.ctx.is_main else None
    if writer is not None and s.state.history:
        log_tensorboard(writer, s.state.history[-1])  # purged and logged again: it may not have been logged before the kill
    try:
        run_epochs(s, on_epoch_end, writer)
    except Exception as exc:
        if cfg.compile and compile_failed(exc):  # torch.compile works lazily: it fails on the first batch
            if s.ctx.is_main and saved is None and not run.last.exists():
                run.clear_started()  # nothing trained: the same --out takes the fixed command
            raise compile_error(exc) from exc
        raise
    finally:
        if writer is not None:
            writer.close()
    return _finish(s)


def _starting_point(run: RunDir, start: Start, cfg: TrainConfig, fingerprint: str, progress: bool) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The config to train and, when resuming, the ``last.pt`` to continue from."""
    if start is Start.RESTART:  # stopped before its first checkpoint: nothing was kept, so it starts over
        cfg = _started_config(run.config)
        if progress:
            log.info(f"{run.path} stopped before its first checkpoint; starting it over")
        run.clear_started()
        return cfg, None
    if start is Start.FRESH:
        return cfg, None
    saved = read_checkpoint(run.last)
    if saved.get("cache_fingerprint") != fingerprint:
        raise UserError(f"{run.path} was trained on another cache (fingerprint differs); resume with the same cache")
    return config_from_dict(saved["config"], f"{run.last} config"), saved


def _set_up(run: RunDir, cache: Cache, share: PartShare | None, cfg: TrainConfig, train_splits: tuple[str, ...], fingerprint: str,
            progress: bool) -> Session:
    """Model, runtime, process group, optimizer, fine-tuning phases, rows and feeder of one run."""
    model, spec = build_model_for(cache, cfg)
    runtime = runtime_for(model, cfg)
    ctx = init_distributed(runtime.device)  # under torchrun: join the process group (gloo on CPU, NCCL on GPU)
    runtime = dataclasses.replace(runtime, device=local_device(runtime.device, ctx))
    progress = progress and ctx.is_main
    say = (lambda text: log.info(text)) if progress else (lambda text: None)
    say(f"device {runtime.device} x{ctx.world} process(es): {runtime.precision}"
        f"{', channels_last' if runtime.channels_last else ''}, {runtime.threads} thread(s)")
    barrier(ctx)  # every rank has checked the run folder before rank 0 writes into it
    if ctx.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
    rank_cfg = rank_config(cfg, ctx)  # this process's batch, and the lr scaled to the global batch (distributed.*)
    if rank_cfg.optim.lr != cfg.optim.lr:
        say(f"lr {cfg.optim.lr:g} scaled {cfg.distributed.scale_lr} to the global batch {rank_cfg.batch_size * ctx.world}: {rank_cfg.optim.lr:g}")
    model = model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    if cfg.distributed.sync_batchnorm:
        model = sync_batchnorm(model, ctx, runtime.device)  # same state_dict keys: checkpoints load into plain BatchNorm
    fine_tune = FineTune(model, cfg, cache, progress=progress)  # freeze/unfreeze phases, cached backbone features
    optimizer = fine_tune.regroup(build_optimizer(model, rank_cfg))
    if cfg.compile:  # in place, before any DDP wrap (PyTorch's advice): state_dict keys stay the plain module's
        compile_in_place(model)
    state = TrainState(_wrap(model, ctx, runtime, fine_tune, cfg), optimizer, torch.Generator().manual_seed(cfg.seed + 1_000_003 * ctx.rank))
    train_rows, val_rows, share = _rows(cache, share, cfg, train_splits, ctx, runtime)
    feeder = feeder_for(model, cache, cfg, runtime)
    preprocess = {**cache.info.preprocess, "mean": list(feeder.mean), "std": list(feeder.std), "channels_last": runtime.channels_last}
    checkpointer = Checkpointer(
        run=run, model=model, optimizer=optimizer, augment_rng=state.aug_generator, runtime=runtime, spec=spec, class_names=cache.class_names,
        preprocess=preprocess, config=config_to_dict(cfg), fingerprint=fingerprint, is_main=ctx.is_main,
    )
    return Session(
        run=run, cfg=cfg, rank_cfg=rank_cfg, ctx=ctx, runtime=runtime, state=state, fine_tune=fine_tune, feeder=feeder,
        train_rows=train_rows, val_rows=val_rows, share=share,
        steps_per_epoch=math.ceil(len(epoch_rows(train_rows, cfg.seed, 0, ctx, share)) / rank_cfg.batch_size),
        class_weights=class_weights(cache.labels[train_rows], cache.num_classes, cfg.class_weights, runtime.device),
        checkpointer=checkpointer, progress=progress,
    )


def _wrap(model: Classifier, ctx: DistContext, runtime: Runtime, fine_tune: FineTune, cfg: TrainConfig) -> torch.nn.Module:
    """``model`` as the loop steps it: wrapped in DDP under torchrun (each rank augments and drops out differently)."""
    if not ctx.enabled:
        return model
    if fine_tune.active:
        raise UserError("fine-tuning phases and cached features are not supported under torchrun yet; train them in one process")
    torch.manual_seed(cfg.seed + ctx.rank)  # dropout masks differ per rank; DDP broadcasts rank 0's weights
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)


def _rows(cache: Cache, share: PartShare | None, cfg: TrainConfig, train_splits: tuple[str, ...], ctx: DistContext,
          runtime: Runtime) -> tuple[np.ndarray, np.ndarray, PartShare | None]:
    """The rows trained on (a nested subset of ``train_splits``) and validated on; the test split is never read."""
    if "test" in train_splits:
        raise UserError("the test split is never trained on")
    train_rows = nested_subset(np.concatenate([cache.indices(s) for s in train_splits]), cache.labels, cfg.train_fraction)
    val_rows = cache.indices("val")[:0] if "val" in train_splits else cache.indices("val")
    if share is not None:
        if tuple(train_splits) != ("train",):
            raise UserError(f"a shard set trains on its train split only (every part holds all of val); train on {ShardSet(share.path).source} instead")
        share = dataclasses.replace(share, epoch_rows=all_reduce_max(len(train_rows), ctx, runtime.device))  # the longest part
    if len(train_rows) == 0:
        raise UserError(f"cache {cache.path} has no training images")
    return train_rows, val_rows, share


def _write_start_files(s: Session, cache: Cache, share: PartShare | None, fingerprint: str, train_splits: tuple[str, ...]) -> None:
    """``config.yaml`` first (its presence marks a started run), then ``environment.json``."""
    data_path = str((share.path if share else cache.path).resolve())
    s.run.write_text(s.run.config, yaml.safe_dump({**config_to_dict(s.cfg), "cache": data_path}, sort_keys=False))
    ledger = environment_ledger(
        s.runtime, seed=s.cfg.seed, cache=data_path, cache_fingerprint=fingerprint,
        train_images=int(len(s.train_rows)), val_images=int(len(s.val_rows)), train_splits=list(train_splits),
        lr=s.rank_cfg.optim.lr, distributed=_distributed_ledger(s.cfg, s.rank_cfg, s.ctx), compiled=s.cfg.compile,
    )
    s.run.write_json(s.run.environment, ledger)
    fault_point("after_config")


def _finish(s: Session) -> RunResult:
    """Restores the best weights if asked, writes ``summary.json`` (the run is then finished)."""
    state, model, run = s.state, s.checkpointer.model, s.run
    barrier(s.ctx)  # rank 0 has written best.pt
    if s.cfg.early_stopping.restore_best and run.best.is_file():
        model.load_state_dict(read_checkpoint(run.best)["state_dict"])
    best = state.history[state.best_epoch - 1] if state.best_epoch else (state.history[-1] if state.history else {})
    images = sum(r["epoch_seconds"] * r["images_per_s"] for r in state.history)
    summary = {
        "model": s.cfg.model.name,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "selected_on": s.cfg.early_stopping.metric,
        "val_acc": best.get("val_acc"),
        "val_loss": best.get("val_loss"),
        "train_seconds": round(state.wall_time, 3),
        "images_per_s": round(images / max(state.wall_time, 1e-9), 1),
        "images_processed": int(round(images)),
        "precision": s.runtime.precision,
        "channels_last": s.runtime.channels_last,
    }
    if s.ctx.is_main:
        run.write_json(run.summary, summary)
    summary["world_size"] = s.ctx.world
    shutdown(s.ctx)
    return RunResult(run.path, model, state.history, state.best_epoch, best, summary)


def _read_back(run: RunDir) -> RunResult:
    """A finished run as ``train`` returned it: best weights, curves and summary from its files."""
    summary = run.read_summary() or {}
    history = [dict(r) for r in read_metrics(run.path)]
    best_epoch = int(summary.get("best_epoch") or 0)
    best = history[best_epoch - 1] if 0 < best_epoch <= len(history) else (history[-1] if history else {})
    return RunResult(run.path, load_model(run.path).model, history, best_epoch, best, summary)


def _started_config(path: Path) -> TrainConfig:
    """The config a run started with, from its ``config.yaml``; a truncated or edited file is an error naming it.

    ``train`` writes every key of the resolved config and then ``cache`` (atomically), so a file
    missing any of them was not written whole by it: starting over with defaults would silently
    train something else.
    """
    try:
        started = yaml_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid YAML ({type(exc).__name__}); restore it, or start the run in a new --out") from None
    expected = set(config_to_dict(TrainConfig())) | {"cache"}
    missing = sorted(expected - set(started)) if isinstance(started, dict) else sorted(expected)
    if missing:
        raise UserError(
            f"{path} is incomplete (missing {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): "
            "it was truncated or edited; restore it, or start the run in a new --out"
        )
    return config_from_dict({k: v for k, v in started.items() if k != "cache"}, str(path))


def _open_data(data: Cache | str | Path) -> tuple[Cache, PartShare | None]:
    """The cache to train on; for a shard set folder, the part this torchrun process reads and how."""
    if isinstance(data, Cache) or not is_shard_set(data):
        return (data if isinstance(data, Cache) else Cache(data)), None
    env = process_env()
    return ShardSet(data).share(rank=env.rank, world=env.world, local_rank=env.local_rank, node=env.node, nodes=env.nodes)


def _distributed_ledger(cfg: TrainConfig, rank_cfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    """How the processes split the batch and what lr that gave, for environment.json."""
    return {
        "world_size": ctx.world,
        "batch": cfg.distributed.batch,
        "per_process_batch": rank_cfg.batch_size,
        "global_batch": rank_cfg.batch_size * ctx.world,
        "scale_lr": cfg.distributed.scale_lr,
        "configured_lr": cfg.optim.lr,
        "lr": rank_cfg.optim.lr,
        "sync_batchnorm": cfg.distributed.sync_batchnorm and ctx.enabled,
    }
