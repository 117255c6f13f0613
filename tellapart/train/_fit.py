"""``train``: one run from a cache to a run folder (config, ledger, curves, checkpoints), resumable.

Run folder::

    config.yaml          resolved TrainConfig (+ the cache it read)
    environment.json     versions, device, precision, seed, cache fingerprint, git commit
    metrics.csv          one row per epoch: losses, accuracies, lr, seconds, images/s
    tb/                  TensorBoard event files of the same
    checkpoints/last.pt  everything needed to resume (written each epoch and every few minutes)
    checkpoints/best.pt  the weights of the best validation epoch
    summary.json         written when the run ends
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tellapart._errors import UserError
from tellapart._files import atomic_write
from tellapart.data import Cache, PartShare, ShardSet, epoch_order, is_shard_set
from tellapart.models import Classifier, create_model

from ._checkpoint import fault_point, read_checkpoint, save_checkpoint
from ._config import TrainConfig, config_from_dict, config_to_dict, yaml_load
from ._device import Runtime, environment_ledger, mostly_grouped_convs, resolve_runtime
from ._distributed import (
    DistContext, all_reduce_max, all_reduce_sums, barrier, broadcast_flag, init_distributed, local_device, process_env, rank_config,
    shard_order, shutdown, sync_batchnorm,
)
from ._finetune import FineTune
from ._loop import EvalResult, Feeder, TrainState, evaluate, train_one_epoch

__all__ = ["RunResult", "train", "nested_subset", "read_metrics", "EpochHook"]

#: ``on_epoch_end(epoch, row) -> stop?``: logging, early stopping and tuner pruning in one hook.
EpochHook = Callable[[int, dict[str, Any]], bool]

_CSV_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "wall_time", "images_per_s")


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


def _normalisation(cache: Cache, mode: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    c = cache.preprocess.channels
    if mode == "unit":
        return (0.0,) * c, (1.0,) * c
    if mode == "symmetric":
        return (0.5,) * c, (0.5,) * c
    return tuple(cache.mean), tuple(max(s, 1e-6) for s in cache.std)


def _build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weights only (Keras applies L2 to kernels, not biases or norm scales)."""
    decay = cfg.optim.weight_decay
    if decay is None:
        decay = getattr(model, "default_weight_decay", None) or 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)
    return torch.optim.Adam(groups, lr=o.lr, betas=o.betas)


def build_model_for(cache: Cache, cfg: TrainConfig) -> tuple[Classifier, dict[str, Any]]:
    """The configured model for this cache's channels, classes and size; and its checkpoint spec."""
    num_outputs = 1 if (cfg.single_logit and cache.num_classes == 2) else cache.num_classes
    pre = cache.preprocess
    spec = {
        "name": cfg.model.name,
        "args": dict(cfg.model.args),
        "in_chans": pre.channels,
        "num_outputs": num_outputs,
        "input_size": pre.size,
        "single_logit": num_outputs == 1,
    }
    model = create_model(cfg.model.name, in_chans=pre.channels, num_classes=num_outputs, input_size=pre.size, **cfg.model.args)
    return model, spec


def runtime_for(model: torch.nn.Module, cfg: TrainConfig) -> Runtime:
    """Device, precision and memory format for training ``model`` as ``cfg`` asks (auto: by its layers)."""
    is_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    return resolve_runtime(
        cfg.device, cfg.precision, cfg.channels_last, cfg.threads, is_conv=is_conv, grouped_convs=mostly_grouped_convs(model)
    )


def feeder_for(model: Classifier, cache: Cache, cfg: TrainConfig, runtime: Runtime) -> Feeder:
    """Training batches of ``cache`` for ``model``: pretrained weights bring their own mean/std, else ``cfg.normalize``."""
    mean, std = model.pretrained_mean_std or _normalisation(cache, cfg.normalize)
    return Feeder(cache.reader(stream=_streams(cache, cfg)), cache.labels, mean, std, runtime)


def _class_weights(labels: np.ndarray, num_classes: int, mode: str, device: torch.device) -> torch.Tensor | None:
    if mode != "balanced":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _is_better(value: float, best: float | None, metric: str, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if metric == "val_loss" else value > best + min_delta


def _write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, buf.getvalue())


def read_metrics(run: str | Path) -> list[dict[str, float | None]]:
    """A run's ``metrics.csv``: one dict per epoch, numbers as floats, empty cells (no validation) as None."""
    path = Path(run) / "metrics.csv"
    if not path.is_file():
        return []
    rows = []
    for raw in csv.DictReader(io.StringIO(path.read_text())):
        rows.append({k: _number(v) for k, v in raw.items() if k is not None})
    return rows


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def train(
    cache: Cache | str | Path,
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
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
        resume: continue the run in ``out`` from its last checkpoint, to the same epoch count and
            with the config it started with (one stopped before its first checkpoint starts over;
            one that stopped early stays stopped).
        on_epoch_end: ``(epoch, row) -> stop?`` called after every epoch.
        init_state_dict: starting weights for a new run (tuning continues a promoted trial on more data).
        train_splits: the splits to train on; with ``("train", "val")`` there is no validation, so the
            run trains ``cfg.epochs`` epochs (tuning's final retraining of the chosen configuration).
    """
    cache, share = _open_data(cache)  # a shard set: this process's part (under torchrun)
    fingerprint = share.fingerprint if share else cache.fingerprint  # what resume and evaluation check
    data_path = (share.path if share else cache.path).resolve()
    out = Path(out)
    last_path, best_path = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    if out.exists() and not out.is_dir():
        raise UserError(f"run folder {out} is not a folder; choose another --out")
    saved: dict[str, Any] | None = None
    if resume and not last_path.is_file():
        if not (out / "config.yaml").is_file():
            raise UserError(f"nothing to resume in {out}: no checkpoints/last.pt (start it without --resume)")
        # Stopped before its first checkpoint: nothing was kept, so resuming means starting over.
        cfg = _started_config(out / "config.yaml")
        _log(progress, f"{out} stopped before its first checkpoint; starting it over")
        _remove_started_files(out)
        resume = False
    if resume:
        saved = read_checkpoint(last_path)
        cfg = config_from_dict(saved["config"], f"{last_path} config")
        if saved.get("cache_fingerprint") != fingerprint:
            raise UserError(f"{out} was trained on another cache (fingerprint differs); resume with the same cache")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"run folder {out} already holds files; resume it with --resume, or choose a new --out")

    _seed_everything(cfg.seed, cfg.deterministic)
    model, spec = build_model_for(cache, cfg)
    runtime = runtime_for(model, cfg)
    ctx = init_distributed(runtime.device)  # under torchrun: join the process group (gloo on CPU, NCCL on GPU)
    runtime = dataclasses.replace(runtime, device=local_device(runtime.device, ctx))
    progress = progress and ctx.is_main
    _log(progress, f"device {runtime.device} x{ctx.world} process(es): {runtime.precision}"
         f"{', channels_last' if runtime.channels_last else ''}, {runtime.threads} thread(s)")
    barrier(ctx)  # every rank has checked the run folder before rank 0 writes into it
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    rank_cfg = rank_config(cfg, ctx)  # this process's batch, and the lr scaled to the global batch (distributed.*)
    if rank_cfg.optim.lr != cfg.optim.lr:
        _log(progress, f"lr {cfg.optim.lr:g} scaled {cfg.distributed.scale_lr} to the global batch {rank_cfg.batch_size * ctx.world}: {rank_cfg.optim.lr:g}")
    model = model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    if cfg.distributed.sync_batchnorm:
        model = sync_batchnorm(model, ctx, runtime.device)  # same state_dict keys: checkpoints load into plain BatchNorm
    fine_tune = FineTune(model, cfg, cache, progress=progress)  # freeze/unfreeze phases, cached backbone features
    optimizer = fine_tune.regroup(_build_optimizer(model, rank_cfg))
    if cfg.compile:  # in place, before any DDP wrap (PyTorch's advice): state_dict keys stay the plain module's
        _compile(model)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003 * ctx.rank)  # each rank augments its own shard differently
    if ctx.enabled:
        if fine_tune.active:
            raise UserError("fine-tuning phases and cached features are not supported under torchrun yet; train them in one process")
        torch.manual_seed(cfg.seed + ctx.rank)  # dropout masks differ per rank; DDP broadcasts rank 0's weights
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    state = TrainState(ddp if ctx.enabled else model, optimizer, aug_gen)

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
    feeder = feeder_for(model, cache, cfg, runtime)
    mean, std = feeder.mean, feeder.std
    weights = _class_weights(cache.labels[train_rows], cache.num_classes, cfg.class_weights, runtime.device)
    steps_per_epoch = math.ceil(len(_epoch_rows(train_rows, cfg.seed, 0, ctx, share)) / rank_cfg.batch_size)
    preprocess = {**cache.manifest["preprocess"], "mean": list(mean), "std": list(std), "channels_last": runtime.channels_last}
    config_dict = config_to_dict(cfg)

    if saved is not None:
        model.load_state_dict(saved["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        aug_gen.set_state(saved["rng"]["augment"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and runtime.device.type == "cuda":  # dropout on the GPU draws from its own RNG
            torch.cuda.set_rng_state(saved["rng"]["cuda"], runtime.device)
        for key in ("epoch", "batch", "step", "partial", "history", "best_value", "best_epoch", "wall_time"):
            setattr(state, key, saved["state"][key])
        _log(progress, f"resuming {out} at epoch {state.epoch + 1}, batch {state.batch} of {steps_per_epoch}")
        if ctx.is_main:  # a kill after last.pt but before metrics.csv: the checkpoint's history is the record
            _write_csv(out / "metrics.csv", state.history)
    elif ctx.is_main:
        if init_state_dict is not None:
            model.load_state_dict(init_state_dict)
        atomic_write(out / "config.yaml", yaml.safe_dump({**config_dict, "cache": str(data_path)}, sort_keys=False))
        ledger = environment_ledger(
            runtime, seed=cfg.seed, cache=str(data_path), cache_fingerprint=fingerprint,
            train_images=int(len(train_rows)), val_images=int(len(val_rows)), train_splits=list(train_splits),
            lr=rank_cfg.optim.lr, distributed=_distributed_ledger(cfg, rank_cfg, ctx),
            compiled=cfg.compile,
        )
        atomic_write(out / "environment.json", json.dumps(ledger, indent=2))
        fault_point("after_config")

    def payload(with_optimizer: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": spec,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "class_names": cache.class_names,
            "preprocess": preprocess,
            "config": config_dict,
            "cache_fingerprint": fingerprint,
            "epoch": state.epoch,
        }
        if with_optimizer:
            data["optimizer"] = optimizer.state_dict()
            data["rng"] = {"augment": aug_gen.get_state(), "torch": torch.get_rng_state()}
            if runtime.device.type == "cuda":
                data["rng"]["cuda"] = torch.cuda.get_rng_state(runtime.device)
            data["state"] = {
                k: getattr(state, k)
                for k in ("epoch", "batch", "step", "partial", "history", "best_value", "best_epoch", "wall_time")
            }
        return data

    def checkpoint(s: TrainState) -> None:
        if ctx.is_main:  # ranks run in lockstep (DDP syncs every step), so rank 0's position is everybody's
            save_checkpoint(last_path, payload(with_optimizer=True))

    writer = _tensorboard(out, state.epoch) if tensorboard and ctx.is_main else None
    if writer is not None and state.history:
        _log_tensorboard(writer, state.history[-1])  # purged and logged again: it may not have been logged before the kill
    metric = cfg.early_stopping.metric
    stale = 0 if not state.history else state.epoch - state.best_epoch
    patience = cfg.early_stopping.patience
    try:
        while state.epoch < cfg.epochs and not (patience and stale >= patience):  # a run that stopped early stays stopped
            order = _epoch_rows(train_rows, cfg.seed, state.epoch, ctx, share)
            epoch_feeder = fine_tune.begin_epoch(state, feeder, np.union1d(train_rows, val_rows))  # may swap state.model
            row_train = train_one_epoch(
                state, epoch_feeder, order, rank_cfg, steps_per_epoch=steps_per_epoch, class_weights=weights,
                checkpoint=checkpoint, progress=progress,
            )
            row_train = _reduce_train_row(row_train, ctx, runtime.device)
            eval_model = state.model.module if ctx.enabled else state.model  # every rank scores all of val: same decisions
            val: EvalResult | None = evaluate(eval_model, epoch_feeder, val_rows, batch_size=cfg.eval_batch_size, class_weights=weights) if len(val_rows) else None
            state.epoch += 1
            state.wall_time += row_train["train_seconds"]
            row = {
                "epoch": state.epoch,
                "train_loss": round(row_train["train_loss"], 6),
                "train_acc": round(row_train["train_acc"], 6),
                "val_loss": round(val.loss, 6) if val else None,
                "val_acc": round(val.accuracy, 6) if val else None,
                "lr": row_train["lr"],
                "epoch_seconds": round(row_train["train_seconds"], 3),
                "wall_time": round(state.wall_time, 3),
                "images_per_s": round(row_train["images_per_s"], 1),
            }
            state.history.append(row)
            value = row[metric] if row[metric] is not None else row["train_loss"]
            if _is_better(float(value), state.best_value, metric if val else "val_loss", cfg.early_stopping.min_delta):
                state.best_value, state.best_epoch, stale = float(value), state.epoch, 0
                if ctx.is_main:
                    save_checkpoint(best_path, payload(with_optimizer=False))
            else:
                stale += 1
            checkpoint(state)
            if ctx.is_main:
                _write_csv(out / "metrics.csv", state.history)
                fault_point("after_metrics")
            if writer is not None:
                _log_tensorboard(writer, row)
            _log(progress, _format_row(row, cfg.epochs))
            stop = broadcast_flag(bool(on_epoch_end(state.epoch, row)) if on_epoch_end else False, ctx, runtime.device)
            if patience and stale >= patience:
                _log(progress, f"early stopping: no {metric} improvement for {stale} epochs; best epoch {state.best_epoch}")
                stop = True
            if stop:
                break
    except Exception as exc:
        if cfg.compile and _compile_failed(exc):  # torch.compile works lazily: it fails on the first batch
            if writer is not None:
                writer.close()
                writer = None
            if ctx.is_main and saved is None and not last_path.exists():
                _remove_started_files(out)  # nothing trained: the same --out takes the fixed command
            raise _compile_error(exc) from exc
        raise
    finally:
        if writer is not None:
            writer.close()

    barrier(ctx)  # rank 0 has written best.pt
    if cfg.early_stopping.restore_best and best_path.is_file():
        model.load_state_dict(read_checkpoint(best_path)["state_dict"])
    best = state.history[state.best_epoch - 1] if state.best_epoch else (state.history[-1] if state.history else {})
    images = sum(r["epoch_seconds"] * r["images_per_s"] for r in state.history)
    summary = {
        "model": cfg.model.name,
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "selected_on": metric,
        "val_acc": best.get("val_acc"),
        "val_loss": best.get("val_loss"),
        "train_seconds": round(state.wall_time, 3),
        "images_per_s": round(images / max(state.wall_time, 1e-9), 1),
        "images_processed": int(round(images)),
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
    }
    if ctx.is_main:
        atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    summary["world_size"] = ctx.world
    shutdown(ctx)
    return RunResult(out, model, state.history, state.best_epoch, best, summary)


def _remove_started_files(out: Path) -> None:
    """Removes what a run writes before its first ``last.pt``, so its folder can start over.

    That is the config, ledger, curves and a first ``best.pt`` (written just before the first
    ``last.pt``), plus temporary files of interrupted writes; nothing else in the folder is touched.
    """
    for name in ("config.yaml", "environment.json", "metrics.csv", "summary.json"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "tb", ignore_errors=True)
    ckpt = out / "checkpoints"
    if ckpt.is_dir():
        (ckpt / "best.pt").unlink(missing_ok=True)
        for tmp in ckpt.glob(".*.pt.tmp-*"):
            tmp.unlink(missing_ok=True)
        if not any(ckpt.iterdir()):
            ckpt.rmdir()
    for tmp in out.glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


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


def _compile(model: torch.nn.Module) -> None:
    """``torch.compile`` (inductor) in place via ``nn.Module.compile``: the module, its parameters and keys stay."""
    try:
        model.compile()
    except RuntimeError as exc:  # e.g. Dynamo does not support this Python or platform
        raise _compile_error(exc) from exc


def _compile_failed(exc: BaseException) -> bool:
    """Whether ``exc`` came from Dynamo or Inductor (tracing, lowering, or a missing C++ compiler)."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, TorchDynamoException)


def _compile_error(exc: BaseException) -> UserError:
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    return UserError(f"config compile=true: torch.compile failed ({reason}); train without it: --set compile=false")


def _open_data(data: Cache | str | Path) -> tuple[Cache, PartShare | None]:
    """The cache to train on; for a shard set folder, the part this torchrun process reads and how."""
    if isinstance(data, Cache) or not is_shard_set(data):
        return (data if isinstance(data, Cache) else Cache(data)), None
    env = process_env()
    return ShardSet(data).share(rank=env.rank, world=env.world, local_rank=env.local_rank, node=env.node, nodes=env.nodes)


def _epoch_rows(train_rows: np.ndarray, seed: int, epoch: int, ctx: DistContext, share: PartShare | None) -> np.ndarray:
    """This process's rows of one epoch, in order; the same count on every rank, a pure function of (seed, epoch).

    A cache: the epoch's order strided over the ranks. A shard set: the part's own order (seeded by
    part too), wrapped to the longest part, strided over the processes reading that part.
    """
    if share is None:
        return shard_order(epoch_order(train_rows, seed, epoch), ctx.rank, ctx.world)
    return shard_order(share.epoch_order(train_rows, seed, epoch), share.reader, share.readers)


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


def _reduce_train_row(row: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Train loss/accuracy over all ranks' images; speed summed over ranks."""
    if not ctx.enabled:
        return row
    seen = row["train_seen"]
    sums = all_reduce_sums(
        {"loss": row["train_loss"] * seen, "correct": row["train_acc"] * seen, "seen": seen, "speed": row["images_per_s"]},
        ctx, device,
    )
    total = max(sums["seen"], 1.0)
    return {**row, "train_seen": sums["seen"], "train_loss": sums["loss"] / total, "train_acc": sums["correct"] / total, "images_per_s": sums["speed"]}


def _streams(cache: Cache, cfg: TrainConfig) -> bool:
    """Read the cache by ``pread`` instead of the memory map: on when it is over half the RAM (or forced)."""
    if cfg.stream != "auto":
        return cfg.stream == "on"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return False
    return cache.pixels.nbytes > ram // 2


def _tensorboard(out: Path, resume_epoch: int):  # type: ignore[no-untyped-def]
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events a killed run logged from its last checkpoint's epoch on, so curves never
    # double up; that epoch's row is logged again (a kill just after last.pt never logged it)
    if resume_epoch:
        _after_existing_event_files(out / "tb")
    return SummaryWriter(log_dir=str(out / "tb"), purge_step=resume_epoch if resume_epoch else None)


def _after_existing_event_files(tb: Path) -> None:
    """Waits (at most a second) until a new event file's name sorts after every existing one.

    TensorBoard reads a folder's event files in name order, and a name starts with the creation
    time in whole seconds: a resume in the same second as the kill could otherwise sort first, and
    its purge would then drop nothing while the old file's last epoch came after it.
    """
    stamps = [int(p.name.split(".")[3]) for p in tb.glob("events.out.tfevents.*") if p.name.split(".")[3].isdigit()]
    while stamps and time.time() < max(stamps) + 1:
        time.sleep(0.05)


def _log_tensorboard(writer: Any, row: dict[str, Any]) -> None:
    step = row["epoch"]
    for key in ("train_loss", "val_loss"):
        if row[key] is not None:
            writer.add_scalar(f"loss/{key.split('_')[0]}", row[key], step)
    for key in ("train_acc", "val_acc"):
        if row[key] is not None:
            writer.add_scalar(f"accuracy/{key.split('_')[0]}", row[key], step)
    writer.add_scalar("lr", row["lr"], step)
    writer.add_scalar("speed/images_per_s", row["images_per_s"], step)
    writer.add_scalar("time/epoch_seconds", row["epoch_seconds"], step)
    writer.flush()


def _format_row(row: dict[str, Any], epochs: int) -> str:
    val = f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}" if row["val_loss"] is not None else ""
    return (
        f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}{val}"
        f"  ({row['epoch_seconds']:.1f}s, {row['images_per_s']:.0f} img/s)"
    )


def _log(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr)
