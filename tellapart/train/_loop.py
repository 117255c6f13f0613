"""The training loop, readable top to bottom: ``train_one_epoch`` and ``evaluate``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tellapart.data import RowReader, iter_batches, normalise_nhwc, normalise_planes, to_tensor

from ._augment import augment_batch
from ._config import TrainConfig
from ._device import Runtime
from ._schedule import lr_at

__all__ = [
    "DevicePixels", "EvalResult", "Feeder", "TrainState", "compute_loss", "device_pixels", "evaluate", "logits_to_probs",
    "train_one_epoch", "train_step",
]

#: Share of the GPU's free memory the training rows' uint8 pixels may take to be kept there.
RESIDENT_FRACTION = 0.5
_COPY_ROWS = 4096  # rows per host-to-device copy while filling: bounds the host copy made per transfer


@dataclass(frozen=True)
class DevicePixels:
    """Cache rows' uint8 pixels held on the training device, so batches are sliced there.

    On a GPU this removes the per-batch host read and host-to-device copy: an epoch then moves
    only row indices across the bus.
    """

    rows: np.ndarray  # sorted cache rows held
    pixels: torch.Tensor  # (len(rows), H, W, C) uint8 on the device

    def covers(self, rows: np.ndarray) -> bool:
        at = np.searchsorted(self.rows, rows)
        return bool(len(rows) == 0 or (at.max() < len(self.rows) and np.array_equal(self.rows[at], rows)))

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """The pixels of cache ``rows`` (each held), in that order, on the device."""
        index = torch.from_numpy(np.searchsorted(self.rows, rows)).to(self.pixels.device, non_blocking=True)
        return self.pixels.index_select(0, index)


def device_pixels(
    pixels: np.ndarray | RowReader, rows: np.ndarray, device: torch.device | str, *, fraction: float = RESIDENT_FRACTION,
    force: bool = False,
) -> DevicePixels | None:
    """``rows``' pixels copied onto ``device``, or None when keeping them there is not worth it.

    Worth it on a CUDA device whose free memory is over ``nbytes / fraction``; never on the CPU,
    where the memory map already is host memory, unless ``force`` (which tests use to check the
    device path gives the same batches).
    """
    device = torch.device(device)
    held = np.unique(np.asarray(rows))
    shape = tuple(pixels.shape[1:])
    nbytes = len(held) * int(np.prod(shape))
    if not force:
        if device.type != "cuda" or len(shape) != 3:
            return None
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes > fraction * free:
            return None
    out = torch.empty((len(held), *shape), dtype=torch.uint8, device=device)
    for start in range(0, len(held), _COPY_ROWS):
        chunk = held[start : start + _COPY_ROWS]
        out[start : start + len(chunk)] = torch.from_numpy(np.ascontiguousarray(pixels[chunk])).to(device)
    return DevicePixels(held, out)


def _batch_rows(order: np.ndarray, batch_size: int, start_batch: int) -> Iterator[np.ndarray]:
    """The rows of each batch, exactly as ``iter_batches`` yields them (sorted within a batch)."""
    for start in range(start_batch * batch_size, len(order), batch_size):
        yield np.sort(order[start : start + batch_size])


@dataclass(frozen=True)
class Feeder:
    """Turns cache rows into model inputs: where pixels live and how they are normalised."""

    pixels: np.ndarray | RowReader  # (n, size, size, channels) uint8: the memory map, or a streaming reader
    labels: np.ndarray  # (n,) int64
    mean: tuple[float, ...]
    std: tuple[float, ...]
    runtime: Runtime

    def tensor(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 NHWC host pixels -> the normalised float NCHW batch (``to_tensor``'s numbers, constants made once)."""
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8:  # e.g. cached float features
            return to_tensor(batch, self.mean, self.std, device=self.runtime.device, channels_last=self.runtime.channels_last)
        return self.normalise(torch.from_numpy(np.ascontiguousarray(batch)).to(self.runtime.device, non_blocking=True))

    @functools.cached_property
    def _planes(self) -> tuple[torch.Tensor, torch.Tensor]:
        # to_tensor's scale and shift planes, made once: every row of a cache has the same shape
        return normalise_planes(self.mean, self.std, tuple(self.pixels.shape[1:]), self.runtime.device)

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC already on the device -> the normalised float NCHW batch ``tensor`` gives."""
        return normalise_nhwc(batch, *self._planes, channels_last=self.runtime.channels_last)

    @functools.cached_property
    def _held(self) -> list[DevicePixels | None]:
        return [None]  # one slot: the training rows, once placed

    def resident(self, order: np.ndarray, *, force: bool = False) -> DevicePixels | None:
        """The training rows kept on the device (see :func:`device_pixels`), placed on first use."""
        if not force and self.runtime.device.type != "cuda":
            return None  # on the CPU the memory map is host memory already
        images = isinstance(self.pixels, RowReader) or (self.pixels.dtype == np.uint8 and self.pixels.ndim == 4)
        if not images:  # e.g. cached backbone features
            return None
        rows = np.unique(order)
        held = self._held[0]
        if held is None or not held.covers(rows):
            held = self._held[0] = device_pixels(self.pixels, rows, self.runtime.device, force=force)
        return held

    @property
    def black(self) -> torch.Tensor:
        """The normalised value of a black pixel, per channel, shaped (1, C, 1, 1)."""
        return torch.tensor([-m / s for m, s in zip(self.mean, self.std)], device=self.runtime.device).view(1, -1, 1, 1)


@dataclass
class TrainState:
    """Everything that changes while training; saved whole in ``last.pt`` to resume."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    aug_generator: torch.Generator
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch (mid-epoch checkpoints)
    step: int = 0  # optimizer steps completed
    partial: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0})
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    wall_time: float = 0.0  # seconds of training so far, summed over resumes


def compute_loss(logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float, class_weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy, or BCE when the model has one output (binary, seed style)."""
    if logits.shape[1] == 1:
        target = labels.float()
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        pos_weight = None if class_weights is None else class_weights[1] / class_weights[0]
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), target, pos_weight=pos_weight)
    return F.cross_entropy(logits.float(), labels, weight=class_weights, label_smoothing=label_smoothing)


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) class probabilities; a single logit becomes [1 - p, p]."""
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], 1)
    return torch.softmax(logits, 1)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    label_smoothing: float,
    class_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch (forward under the runtime's autocast, loss, backward); (logits, loss).

    The one training step: the epoch loop, the LR range test and the throughput probe all take it.
    """
    with runtime.autocast():
        logits = model(x)
    loss = compute_loss(logits, y, label_smoothing=label_smoothing, class_weights=class_weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits, loss


class _DeviceSums:
    """Loss and correct-count sums kept on the device between reads, so a step need not wait for it.

    Adds in float64 in the same order as Python floats would (``float(loss) * n`` then ``+=``), so
    the flushed sums are bit-identical to summing on the host each step.
    """

    def __init__(self, sums: dict[str, float], device: torch.device) -> None:
        self.sums = sums
        wide = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.loss = torch.tensor(sums["loss"], dtype=wide, device=device)
        self.correct = torch.tensor(sums["correct"], dtype=wide, device=device)

    def add(self, loss: torch.Tensor, right: torch.Tensor, n: int) -> None:
        self.loss += loss.to(self.loss.dtype) * n
        self.correct += right.sum()

    def flush(self) -> None:
        self.sums["loss"], self.sums["correct"] = float(self.loss), float(self.correct)


def _predicted(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def train_one_epoch(
    state: TrainState,
    feeder: Feeder,
    order: np.ndarray,
    cfg: TrainConfig,
    *,
    steps_per_epoch: int,
    class_weights: torch.Tensor | None = None,
    checkpoint: Callable[[TrainState], None] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Trains one epoch over ``order`` from batch ``state.batch``; returns train loss, accuracy, speed.

    ``checkpoint(state)`` is called every ``cfg.checkpoint_every_s`` seconds, mid-epoch, so a
    killed run resumes at the batch it reached (the batch order is a function of seed and epoch).
    """
    model, optimizer = state.model, state.optimizer
    model.train()
    total_steps = steps_per_epoch * cfg.epochs
    sums = state.partial
    last_save = time.perf_counter()
    bar = tqdm(
        total=steps_per_epoch, initial=state.batch, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", unit="batch",
        disable=not progress, leave=False,
    )
    held = feeder.resident(order)  # on a GPU with room: batches sliced on the device, no host copy
    batches: Iterator[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = (
        ((None, feeder.labels[rows], rows) for rows in _batch_rows(order, cfg.batch_size, state.batch))
        if held is not None
        else iter_batches(feeder.pixels, feeder.labels, order, cfg.batch_size, start_batch=state.batch)
    )
    black = feeder.black if cfg.augment.enabled else None
    device_sums = _DeviceSums(sums, feeder.runtime.device)
    for pixels, labels, rows in batches:
        started = time.perf_counter()
        x = feeder.normalise(held.take(rows)) if held is not None else feeder.tensor(pixels)
        y = torch.from_numpy(labels).to(feeder.runtime.device, non_blocking=True)
        if cfg.augment.enabled:
            x = augment_batch(x, cfg.augment, state.aug_generator, black=black)
        lr = lr_at(state.step, total_steps, steps_per_epoch, cfg.optim.lr, cfg.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        logits, loss = train_step(model, optimizer, feeder.runtime, x, y, label_smoothing=cfg.label_smoothing, class_weights=class_weights)
        n = len(labels)
        device_sums.add(loss.detach(), _predicted(logits.detach()) == y, n)
        sums["seen"] += n
        sums["seconds"] += time.perf_counter() - started
        state.batch += 1
        state.step += 1
        bar.update(1)
        if progress:  # reading the running loss waits for the device: only when someone is watching
            device_sums.flush()
            bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.4f}", lr=f"{lr:.2g}")
        if checkpoint and cfg.checkpoint_every_s > 0 and time.perf_counter() - last_save > cfg.checkpoint_every_s:
            device_sums.flush()  # the checkpoint holds state.partial
            checkpoint(state)
            last_save = time.perf_counter()
    device_sums.flush()
    bar.close()
    seen = max(sums["seen"], 1.0)
    result = {
        "train_seen": sums["seen"],
        "train_loss": sums["loss"] / seen,
        "train_acc": sums["correct"] / seen,
        "train_seconds": sums["seconds"],
        "images_per_s": sums["seen"] / max(sums["seconds"], 1e-9),
        "lr": optimizer.param_groups[0]["lr"],
    }
    state.partial = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
    state.batch = 0
    return result


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    probs: np.ndarray  # (N, K) float32 class probabilities
    labels: np.ndarray  # (N,) int64
    rows: np.ndarray  # (N,) cache rows, in the order of probs


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    feeder: Feeder,
    rows: np.ndarray,
    *,
    batch_size: int = 256,
    class_weights: torch.Tensor | None = None,
) -> EvalResult:
    """Loss, accuracy and probabilities of ``model`` on cache ``rows`` (eval mode, no augmentation)."""
    model.eval()
    rows = np.sort(np.asarray(rows))  # a forward sweep over the memory map; results follow this order
    probs, losses, seen = [], 0.0, 0
    for pixels, labels, _ in iter_batches(feeder.pixels, feeder.labels, rows, batch_size):
        x = feeder.tensor(pixels)
        y = torch.from_numpy(labels).to(feeder.runtime.device)
        with feeder.runtime.autocast():
            logits = model(x)
        losses += float(compute_loss(logits, y, label_smoothing=0.0, class_weights=class_weights)) * len(labels)
        seen += len(labels)
        probs.append(logits_to_probs(logits).cpu().numpy())
    all_probs = np.concatenate(probs) if probs else np.zeros((0, 2), np.float32)
    labels = feeder.labels[rows]
    accuracy = float((all_probs.argmax(1) == labels).mean()) if len(labels) else float("nan")
    return EvalResult(losses / max(seen, 1), accuracy, all_probs.astype(np.float32), labels, rows)
