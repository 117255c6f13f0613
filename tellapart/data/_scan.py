"""Decode every item of a source once, in parallel, and find duplicates from the hashes."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.pool
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
from tqdm import tqdm

from ._decode import Decoded, Payload, Preprocess, decode
from ._sources import Item, Source

__all__ = ["scan", "find_duplicates", "Duplicates", "default_workers"]

_CHUNK = 16  # items a worker decodes per task: amortises inter-process overhead


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _pool(workers: int) -> mp.pool.Pool:
    """Decoding processes, started as cheaply as is safe.

    ``fork`` starts in milliseconds and shares what the parent imported, but is unsafe once
    PyTorch's thread pools exist; then ``forkserver``, whose server imports the decoder once
    (workers fork from it instead of importing it each).
    """
    import scipy.fftpack  # noqa: F401  (imagehash imports it on first use: once here, not per worker)

    if "torch" not in sys.modules:
        return mp.get_context("fork").Pool(workers)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx.Pool(workers)


def _decode_chunk(args: tuple[list[Payload], Preprocess]) -> list[Decoded]:
    payloads, pre = args
    return [decode(p, pre) for p in payloads]


def _chunks(payloads: Iterator[Payload], pre: Preprocess) -> Iterator[tuple[list[Payload], Preprocess]]:
    while chunk := list(islice(payloads, _CHUNK)):
        yield chunk, pre


def scan(
    source: Source,
    items: Sequence[Item],
    pre: Preprocess,
    *,
    workers: int = 0,
    progress: bool = True,
    desc: str = "decode",
    on_result: Callable[[int, Decoded], None] | None = None,
) -> list[Decoded]:
    """Decodes ``items`` with ``workers`` processes (0: all cores), in order.

    ``on_result(index, decoded)`` is called in the parent as results arrive (to write pixels);
    the returned list keeps everything except the pixels, which callers usually stream away.
    """
    workers = workers or default_workers()
    payloads = source.payloads(items)
    results: list[Decoded] = []
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, smoothing=0.05)

    def consume(decoded_chunks: Iterator[list[Decoded]]) -> None:
        for chunk in decoded_chunks:
            for d in chunk:
                index = len(results)
                if on_result is not None:
                    on_result(index, d)
                results.append(Decoded(None, d.width, d.height, d.mode, d.format, d.content_hash, d.phash, d.error))
            bar.update(len(chunk))

    try:
        if workers <= 1 or len(items) < 4 * _CHUNK:
            consume(map(_decode_chunk, _chunks(payloads, pre)))
        else:
            with _pool(workers) as pool:
                consume(pool.imap(_decode_chunk, _chunks(payloads, pre), chunksize=1))
    finally:
        bar.close()
    return results


@dataclass(frozen=True)
class Duplicates:
    """Exact and near duplicates among decoded items (indices into the scanned list)."""

    exact: list[list[int]]  # groups of identical files (same bytes or pixels)
    near: list[tuple[int, int, int]]  # (i, j, hamming distance) of perceptually similar, not identical, images


def find_duplicates(
    hashes: Sequence[str], phashes: Sequence[int], ok: Sequence[bool], *, threshold: int = 4, max_pairs: int = 100_000
) -> Duplicates:
    """Exact duplicates by content hash; near duplicates by perceptual-hash Hamming distance.

    The near search is all-pairs on 64-bit hashes in blocks (20,000 images: about 2e8 XOR +
    popcount operations, a few seconds), which finds every pair within ``threshold`` bits.
    """
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, (h, good) in enumerate(zip(hashes, ok)):
        if good and h:
            by_hash[h].append(i)
    exact = [g for g in by_hash.values() if len(g) > 1]
    exact_pair = {(a, b) for g in exact for a in g for b in g if a < b}
    idx = np.array([i for i, good in enumerate(ok) if good], dtype=np.int64)
    values = np.array([phashes[i] for i in idx], dtype=np.uint64)
    near: list[tuple[int, int, int]] = []
    block = 512  # rows per block: 512 x 20,000 x 8 bytes = 80 MB of temporaries
    for start in range(0, len(values), block):
        part = values[start : start + block]
        dist = np.bitwise_count(part[:, None] ^ values[None, :])
        rows, cols = np.nonzero(dist <= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            a, b = int(idx[start + r]), int(idx[c])
            if a < b and (a, b) not in exact_pair:
                near.append((a, b, int(dist[r, c])))
                if len(near) >= max_pairs:
                    return Duplicates(exact, near)
    return Duplicates(exact, near)
