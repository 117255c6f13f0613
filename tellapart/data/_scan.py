"""Decode every item of a source once, in parallel, and find duplicates from the hashes and pixels."""

from __future__ import annotations

import dataclasses
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
from ._dedup import THUMB, canonical, candidate_pairs, cross_pairs, nearest_pairs, phashes, shifted, verify
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
                results.append(dataclasses.replace(d, pixels=None))  # every field but the pixels, notes included
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

    exact: list[list[int]]  # groups of identical files (same bytes)
    near: list[tuple[int, int, int, float]]  # (i, j, hash distance, similarity): confirmed on the pixels, not identical
    candidates: int = 0  # pairs within the hash distance that were compared on the pixels


def find_duplicates(
    hashes: Sequence[str],
    thumbs: np.ndarray,
    ok: Sequence[bool],
    *,
    sides: Sequence[int],
    threshold: int = 4,
    per_image: int = 10,
) -> Duplicates:
    """Exact duplicates by content hash; near duplicates by perceptual hash, confirmed on the pixels.

    Candidates are pairs within ``threshold`` bits on the perceptual hash of the thumbnails as
    they are, of the thumbnails aligned (centred and scaled: shifts and crops undone), or, for
    images of at most :data:`_SHIFTED_MAX` px, of one of them moved by one of its own pixels
    against the other as it is (a one-pixel shift changes a tiny image's hash by 30 of 64 bits).
    Each image keeps its ``per_image`` nearest candidates, so the work grows linearly with the
    number of images; each candidate is then confirmed on the pixels (:func:`_dedup.verify`).

    Args:
        hashes, ok: per item, its content hash and whether it was readable.
        thumbs: (items, 32, 32) grey uint8 thumbnails (rows of unreadable items are ignored).
        sides: per item, the side in pixels of the detail it holds (see :func:`_dedup.verify`).
        threshold: perceptual-hash bits two images may differ by to be compared on the pixels.
        per_image: candidates kept per image, the nearest in hash distance.
    """
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, (h, good) in enumerate(zip(hashes, ok)):
        if good and h:
            by_hash[h].append(i)
    exact = [g for g in by_hash.values() if len(g) > 1]
    group_of = np.arange(len(ok), dtype=np.int64) + len(ok)  # items outside exact groups: a group of their own
    for k, g in enumerate(exact):
        group_of[g] = k
    idx = np.flatnonzero(np.asarray(ok, dtype=bool)).astype(np.int64)
    raw = np.asarray(thumbs)[idx]
    side = np.asarray(sides, dtype=np.int64)[idx]
    aligned = canonical(raw)
    ci, cj, dist = _candidates(raw, aligned, side, threshold)
    keep = group_of[idx[ci]] != group_of[idx[cj]]
    ci, cj, dist = ci[keep], cj[keep], dist[keep]
    keep = nearest_pairs(ci, cj, dist, per_image)
    ci, cj, dist = ci[keep], cj[keep], dist[keep]
    confirmed, score = verify(ci, cj, raw, aligned, side)
    a, b = idx[ci[confirmed]], idx[cj[confirmed]]
    near = [(int(x), int(y), int(d), round(float(s), 4)) for x, y, d, s in zip(a, b, dist[confirmed], score[confirmed])]
    return Duplicates(exact, near, candidates=len(ci))


_SHIFTED_MAX = 16  # images up to this side (px) are also hashed moved by one of their pixels (larger: the aligned view suffices)


def _candidates(raw: np.ndarray, aligned: np.ndarray, sides: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) close in any hash view, each with its smallest hash distance over the views."""
    n = len(raw)
    raw_hash = phashes(raw)
    found = [candidate_pairs(raw_hash, radius), candidate_pairs(phashes(aligned), radius)]
    step = np.rint(THUMB / np.maximum(sides, 1)).astype(np.int64)  # one image pixel, in thumbnail pixels
    for s in np.unique(step[sides <= _SHIFTED_MAX]).tolist():
        rows = np.flatnonzero((step == s) & (sides <= _SHIFTED_MAX))
        for dy, dx in ((0, s), (s, 0), (s, s), (s, -s)):  # the opposite shifts are the same pairs seen from the other side
            q, d, dist = cross_pairs(phashes(shifted(raw[rows], dy, dx)), raw_hash, radius)
            q = rows[q]
            found.append((np.minimum(q, d), np.maximum(q, d), dist))
    i = np.concatenate([f[0] for f in found])
    j = np.concatenate([f[1] for f in found])
    dist = np.concatenate([f[2] for f in found])
    keep = i != j
    key, dist = i[keep] * max(n, 1) + j[keep], dist[keep]
    order = np.lexsort((dist, key))  # by pair, nearest view first
    key, dist = key[order], dist[order]
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    key, dist = key[first], dist[first]
    return key // max(n, 1), key % max(n, 1), dist
