"""Dynamic batching: concurrent requests' images share one forward pass.

Requests wait in a bounded queue; one collector takes the first waiting request, then every
request that arrives within ``max_wait_s`` (or is already waiting) while the batch stays at most
``max_batch`` images, and runs the model once on a single inference thread. A request never
straddles two batches; one larger than ``max_batch`` runs alone.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Batcher", "BatcherStats", "QueueFull"]


class QueueFull(Exception):
    """More images are waiting than the queue holds: the caller should answer 503."""


@dataclass
class BatcherStats:
    batches: int = 0  # forward passes run
    images: int = 0  # images predicted
    largest_batch: int = 0  # most images in one forward pass
    failures: int = 0  # forward passes that raised

    def to_json(self) -> dict[str, float]:
        mean = self.images / self.batches if self.batches else 0.0
        return {"batches": self.batches, "images": self.images, "largest_batch": self.largest_batch,
                "mean_batch": round(mean, 3), "failures": self.failures}


@dataclass
class _Waiting:
    pixels: np.ndarray  # (n, H, W, C) uint8
    future: asyncio.Future[np.ndarray]
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """Collects requests into batches of at most ``max_batch`` images for ``predict``.

    Args:
        predict: (N, H, W, C) uint8 -> (N, K) probabilities; runs on one dedicated thread.
        max_batch: most images per forward pass.
        max_wait_s: longest a request waits for company once the collector has taken it, seconds.
        max_queued: most images waiting; beyond it :meth:`submit` raises :class:`QueueFull`.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], *, max_batch: int, max_wait_s: float, max_queued: int) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queued = max_queued
        self.stats = BatcherStats()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._queued_images = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tellapart-infer")

    @property
    def queued_images(self) -> int:
        return self._queued_images

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tellapart-batcher")

    async def stop(self) -> None:
        """Stops collecting, fails whatever still waits, and ends the inference thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._waiting:
            item = self._waiting.popleft()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self._queued_images = 0
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for ``pixels`` (n images), computed in a batch with other requests."""
        if self._queued_images + len(pixels) > self.max_queued:
            raise QueueFull(f"{self._queued_images} images are waiting (at most {self.max_queued})")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(pixels, future))
        self._queued_images += len(pixels)
        self._wake.set()
        return await future

    def _take(self) -> _Waiting:
        item = self._waiting.popleft()
        self._queued_images -= len(item.pixels)
        return item

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._take()]
            size = len(batch[0].pixels)
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch:
                if self._waiting:
                    if size + len(self._waiting[0].pixels) > self.max_batch:
                        break  # it starts the next batch
                    item = self._take()
                    batch.append(item)
                    size += len(item.pixels)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            live = [b for b in batch if not b.future.done()]  # a client that went away is not computed
            if not live:
                continue
            pixels = np.concatenate([b.pixels for b in live]) if len(live) > 1 else live[0].pixels
            try:
                probs = await loop.run_in_executor(self._executor, self.predict, pixels)
            except Exception as exc:  # noqa: BLE001 - one bad batch answers 500 to its requests, the server lives on
                self.stats.failures += 1
                for b in live:
                    if not b.future.done():
                        b.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.images += len(pixels)
            self.stats.largest_batch = max(self.stats.largest_batch, len(pixels))
            start = 0
            for b in live:
                n = len(b.pixels)
                if not b.future.done():
                    b.future.set_result(probs[start : start + n])
                start += n
