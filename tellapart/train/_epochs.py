"""The epoch loop of one run: train, validate, select, checkpoint, record, decide whether to stop.

``train`` builds a :class:`Session` and hands it to :func:`run_epochs`; every decision between
epochs (early stopping, a tuner's pruning, fit's deadline) is an ``on_epoch_end(epoch, row) ->
stop?`` hook, early stopping included (:class:`EarlyStopping`).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tellapart._files import atomic_write
from tellapart._log import get_logger
from tellapart.data import PartShare, epoch_order
from tellapart.runs import RunDir

from ._checkpoint import fault_point
from ._checkpointer import Checkpointer
from ._config import TrainConfig
from ._device import Runtime
from ._distributed import DistContext, all_reduce_sums, broadcast_flag, shard_order
from ._finetune import FineTune
from ._loop import EvalResult, Feeder, TrainState, evaluate, train_one_epoch

__all__ = ["EarlyStopping", "EpochHook", "Session", "log_tensorboard", "open_tensorboard", "epoch_rows", "read_metrics", "run_epochs", "write_metrics_csv"]

#: ``on_epoch_end(epoch, row) -> stop?``: logging, early stopping and tuner pruning in one hook.
EpochHook = Callable[[int, dict[str, Any]], bool]

log = get_logger("tellapart.train")


@dataclass
class Session:
    """What one run is made of, built once by ``train`` and read by the epoch loop."""

    run: RunDir
    cfg: TrainConfig  # as configured (epochs, early stopping, eval batch)
    rank_cfg: TrainConfig  # this process's batch size and lr (differs under torchrun)
    ctx: DistContext
    runtime: Runtime
    state: TrainState
    fine_tune: FineTune
    feeder: Feeder
    train_rows: np.ndarray
    val_rows: np.ndarray
    share: PartShare | None  # a shard set's part this process reads, else None
    steps_per_epoch: int
    class_weights: torch.Tensor | None
    checkpointer: Checkpointer
    progress: bool

    def say(self, text: str) -> None:
        if self.progress:
            log.info(text)


class EarlyStopping:
    """``on_epoch_end`` hook: stop once ``metric`` has not improved for ``patience`` epochs (0: never).

    Staleness is read from the run's own record (epochs since its best), so a resumed run that
    had stopped early stays stopped.
    """

    def __init__(self, state: TrainState, patience: int, metric: str, say: Callable[[str], None]) -> None:
        self.state, self.patience, self.metric, self.say = state, patience, metric, say

    def exhausted(self) -> bool:
        return bool(self.patience) and bool(self.state.history) and self.state.epoch - self.state.best_epoch >= self.patience

    def __call__(self, epoch: int, row: dict[str, Any]) -> bool:
        if not self.exhausted():
            return False
        self.say(f"early stopping: no {self.metric} improvement for {epoch - self.state.best_epoch} epochs; best epoch {self.state.best_epoch}")
        return True


def run_epochs(s: Session, on_epoch_end: EpochHook | None, writer: Any) -> None:
    """Trains epochs until ``cfg.epochs``, early stopping, or a hook asks to stop."""
    stopper = EarlyStopping(s.state, s.cfg.early_stopping.patience, s.cfg.early_stopping.metric, s.say)
    while s.state.epoch < s.cfg.epochs and not stopper.exhausted():
        row = _one_epoch(s)
        _record(s, row, writer)
        stop = broadcast_flag(bool(on_epoch_end(s.state.epoch, row)) if on_epoch_end else False, s.ctx, s.runtime.device)
        if stopper(s.state.epoch, row) or stop:
            break


def _one_epoch(s: Session) -> dict[str, Any]:
    """One epoch of training and validation; appends and returns its row."""
    state, cfg = s.state, s.cfg
    order = epoch_rows(s.train_rows, cfg.seed, state.epoch, s.ctx, s.share)
    feeder = s.fine_tune.begin_epoch(state, s.feeder, np.union1d(s.train_rows, s.val_rows))  # may swap state.model
    trained = train_one_epoch(
        state, feeder, order, s.rank_cfg, steps_per_epoch=s.steps_per_epoch, class_weights=s.class_weights,
        checkpoint=s.checkpointer.save_last, progress=s.progress,
    )
    trained = _reduce_train_row(trained, s.ctx, s.runtime.device)
    eval_model = state.model.module if s.ctx.enabled else state.model  # every rank scores all of val: same decisions
    val: EvalResult | None = (
        evaluate(eval_model, feeder, s.val_rows, batch_size=cfg.eval_batch_size, class_weights=s.class_weights) if len(s.val_rows) else None
    )
    state.epoch += 1
    state.wall_time += trained["train_seconds"]
    row = {
        "epoch": state.epoch,
        "train_loss": round(trained["train_loss"], 6),
        "train_acc": round(trained["train_acc"], 6),
        "val_loss": round(val.loss, 6) if val else None,
        "val_acc": round(val.accuracy, 6) if val else None,
        "lr": trained["lr"],
        "epoch_seconds": round(trained["train_seconds"], 3),
        "wall_time": round(state.wall_time, 3),
        "images_per_s": round(trained["images_per_s"], 1),
    }
    state.history.append(row)
    return row


def _record(s: Session, row: dict[str, Any], writer: Any) -> None:
    """Selection (best.pt), then last.pt, curves and the progress line: in this order, so a kill
    between any two leaves files a resume reads consistently."""
    state, metric = s.state, s.cfg.early_stopping.metric
    has_val = row["val_loss"] is not None
    value = row[metric] if row[metric] is not None else row["train_loss"]
    if _is_better(float(value), state.best_value, metric if has_val else "val_loss", s.cfg.early_stopping.min_delta):
        state.best_value, state.best_epoch = float(value), state.epoch
        s.checkpointer.save_best(state)
    s.checkpointer.save_last(state)
    if s.ctx.is_main:
        write_metrics_csv(s.run.metrics_csv, state.history)
        fault_point("after_metrics")
    if writer is not None:
        log_tensorboard(writer, row)
    s.say(_format_row(row, s.cfg.epochs))


_CSV_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "wall_time", "images_per_s")


def _is_better(value: float, best: float | None, metric: str, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if metric == "val_loss" else value > best + min_delta


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, buf.getvalue())


def read_metrics(run: str | Path) -> list[dict[str, float | None]]:
    """A run's ``metrics.csv``: one dict per epoch, numbers as floats, empty cells (no validation) as None."""
    path = RunDir(Path(run)).metrics_csv
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


def epoch_rows(train_rows: np.ndarray, seed: int, epoch: int, ctx: DistContext, share: PartShare | None) -> np.ndarray:
    """This process's rows of one epoch, in order; the same count on every rank, a pure function of (seed, epoch).

    A cache: the epoch's order strided over the ranks. A shard set: the part's own order (seeded by
    part too), wrapped to the longest part, strided over the processes reading that part.
    """
    if share is None:
        return shard_order(epoch_order(train_rows, seed, epoch), ctx.rank, ctx.world)
    return shard_order(share.epoch_order(train_rows, seed, epoch), share.reader, share.readers)


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


def open_tensorboard(out: Path, resume_epoch: int):  # type: ignore[no-untyped-def]
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


def log_tensorboard(writer: Any, row: dict[str, Any]) -> None:
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
