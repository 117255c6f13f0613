"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai's ``lr_find``).

A fresh model, built from ``cfg.seed`` like ``train`` builds it, trains for ``steps`` batches while
the learning rate grows exponentially from ``start_lr`` to ``end_lr``; the test stops early once the
loss diverges. The suggested learning rate is where the smoothed loss falls fastest. Nothing here
touches a later run: its model, optimizer and random numbers are its own.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tellapart._errors import UserError
from tellapart.data import Cache, epoch_order, iter_batches

from ._config import TrainConfig
from ._builders import build_model_for, build_optimizer, class_weights, feeder_for, runtime_for
from ._fit import nested_subset
from ._loop import Feeder, train_step

__all__ = ["LRFinderResult", "find_lr", "range_test_lr", "suggest_lr"]

#: Weight of the past in the loss's exponential moving average (bias-corrected, as fastai's);
#: 0.9 averages over about the last 10 steps.
SMOOTHING = 0.9
#: The test stops when the smoothed loss exceeds this multiple of the best so far (or is not finite).
DIVERGENCE = 4.0


@dataclass(frozen=True)
class LRFinderResult:
    lrs: tuple[float, ...]  # learning rate of each step
    losses: tuple[float, ...]  # smoothed training loss after each step
    suggested_lr: float  # steepest descent of the smoothed loss (see suggest_lr)
    diverged: bool  # stopped early: the loss exceeded DIVERGENCE x its best (or was not finite)
    csv: Path | None = None  # lr_find.csv (lr, loss), when an output folder was given
    plot: Path | None = None  # lr_find.png, loss against log lr with the suggestion marked


def range_test_lr(step: int, steps: int, start_lr: float, end_lr: float) -> float:
    """Learning rate of step ``step`` (0-based) of ``steps``: exponential from ``start_lr`` to exactly ``end_lr``."""
    if step >= steps - 1:
        return end_lr
    return start_lr * (end_lr / start_lr) ** (step / (steps - 1))


def suggest_lr(lrs: np.ndarray | list[float], losses: np.ndarray | list[float]) -> float:
    """The learning rate where the smoothed loss falls fastest against log(lr), before its minimum.

    The first tenth of the curve is skipped (its average holds few steps yet); a loss that never
    falls suggests the smallest learning rate tested.
    """
    lr, loss = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    end = int(np.argmin(loss)) + 1  # the loss only rises after its minimum
    if end < 3:
        return float(lr[0])
    start = min(len(lr) // 10, end - 3)
    slope = np.gradient(loss[start:end], np.log(lr[start:end]))
    return float(lr[start + int(np.argmin(slope))])


def find_lr(
    cache: Cache | str | Path,
    cfg: TrainConfig,
    out: str | Path | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    progress: bool = True,
) -> LRFinderResult:
    """Runs the learning-rate range test of ``cfg``'s model, optimizer and loss on the train split.

    Batches are those of training (``cfg.batch_size``, the run's normalisation, precision and
    channels_last) without augmentation; fine-tuning phases and ``compile`` are not applied, and the
    test runs in one process.

    Args:
        cache: a prepared cache (or its folder).
        cfg: the training config whose ``optim.lr`` is sought (its value is ignored here).
        out: folder for ``lr_find.csv`` and ``lr_find.png`` (created); None writes nothing.
        start_lr: learning rate of the first step.
        end_lr: learning rate of the last step.
        steps: optimizer steps, spaced exponentially from ``start_lr`` to ``end_lr``.
        progress: show a progress bar.
    """
    if steps < 5:
        raise UserError(f"the range test needs at least 5 steps, got {steps}; use --steps 100")
    if not 0 < start_lr < end_lr:
        raise UserError(f"the range test needs 0 < start lr < end lr, got {start_lr:g} and {end_lr:g}; e.g. --start-lr 1e-7 --end-lr 10")
    folder = None if out is None else Path(out)
    if folder is not None and folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is not a folder; choose another --out")
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    rows = nested_subset(cache.indices("train"), cache.labels, cfg.train_fraction)
    if len(rows) == 0:
        raise UserError(f"cache {cache.path} has no training images")
    with torch.random.fork_rng(devices=[]):  # the caller's random numbers stay as they were
        torch.manual_seed(cfg.seed)
        lrs, losses, diverged = _range_test(cache, cfg, rows, start_lr, end_lr, steps, progress)
    if not lrs:
        raise UserError(f"the loss was not finite at the first step (lr {start_lr:g}); try a smaller --start-lr or --set precision=fp32")
    suggestion = suggest_lr(lrs, losses)
    csv_path: Path | None = None
    plot_path: Path | None = None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, plot_path = folder / "lr_find.csv", folder / "lr_find.png"
        _write_csv(csv_path, lrs, losses)
        plot_path.write_bytes(plot_lr_find(lrs, losses, suggestion))
    return LRFinderResult(tuple(lrs), tuple(losses), suggestion, diverged, csv_path, plot_path)


def _range_test(
    cache: Cache, cfg: TrainConfig, rows: np.ndarray, start_lr: float, end_lr: float, steps: int, progress: bool
) -> tuple[list[float], list[float], bool]:
    """The test itself: (lrs, smoothed losses, diverged)."""
    model, _ = build_model_for(cache, cfg)
    runtime = runtime_for(model, cfg)
    model = model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    model.train()
    feeder = feeder_for(model, cache, cfg, runtime)
    weights = class_weights(cache.labels[rows], cache.num_classes, cfg.class_weights, runtime.device)
    optimizer = build_optimizer(model, cfg)
    lrs: list[float] = []
    losses: list[float] = []
    average, best, diverged = 0.0, math.inf, False
    batches = _endless_batches(feeder, rows, cfg)
    bar = tqdm(total=steps, desc="lr range test", unit="step", disable=not progress, leave=False)
    for step in range(steps):
        x, y = next(batches)
        lr = range_test_lr(step, steps, start_lr, end_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        _, loss = train_step(model, optimizer, runtime, x, y, label_smoothing=cfg.label_smoothing, class_weights=weights)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = True
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        bar.update(1)
        bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{lr:.2g}")
        if smoothed > DIVERGENCE * best:
            diverged = True
            break
    bar.close()
    return lrs, losses, diverged


def _endless_batches(feeder: Feeder, rows: np.ndarray, cfg: TrainConfig) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches on the device, epoch after epoch in training's order; no augmentation."""
    drop_last = len(rows) >= cfg.batch_size  # a tiny last batch would only add noise to the curve
    epoch = 0
    while True:
        order = epoch_order(rows, cfg.seed, epoch)
        for pixels, labels, _ in iter_batches(feeder.pixels, feeder.labels, order, cfg.batch_size, drop_last=drop_last):
            yield feeder.tensor(pixels), torch.from_numpy(labels).to(feeder.runtime.device)
        epoch += 1


def _write_csv(path: Path, lrs: list[float], losses: list[float]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lr", "loss"])
        writer.writerows((f"{lr:.6g}", f"{loss:.6g}") for lr, loss in zip(lrs, losses))


def plot_lr_find(lrs: list[float], losses: list[float], suggested: float) -> bytes:
    """PNG of the smoothed loss against the learning rate (log axis), the suggestion marked."""
    from matplotlib.figure import Figure  # a Figure, not pyplot: the Agg canvas, no global state

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.plot(lrs, losses, color="#1f77b4")
    ax.set_xscale("log")
    k = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - math.log(suggested))))
    ax.axvline(suggested, color="#d62728", linestyle="--", linewidth=1)
    ax.plot([lrs[k]], [losses[k]], "o", color="#d62728", label=f"suggested lr {suggested:.2g}")
    lowest = int(np.argmin(losses))
    if max(losses) > 1.5 * max(losses[: lowest + 1]):  # keep the useful part readable beside a divergence
        ax.set_ylim(top=1.5 * max(losses[: lowest + 1]))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("learning-rate range test")
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()
