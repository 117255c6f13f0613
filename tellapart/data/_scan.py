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
from ._dedup import (
    THUMB, Native, canonical, candidate_pairs, cross_pairs, descriptors, nearest_pairs, neighbour_pairs, phashes, shifted, verify,
)
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
                results.append(dataclasses.replace(d, pixels=None, native=None, thumb=None, moments=None))  # every field but the pixels and their summaries
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
    candidates: int = 0  # candidate pairs (close hashes or nearest neighbours) that were compared on the pixels


def find_duplicates(
    hashes: Sequence[str],
    thumbs: np.ndarray,
    ok: Sequence[bool],
    *,
    sides: Sequence[int],
    threshold: int = 4,
    per_image: int = 10,
    neighbours: int = 5,
    native: Native | None = None,
) -> Duplicates:
    """Exact duplicates by content hash; near duplicates by perceptual hash and nearest neighbours, confirmed on the pixels.

    Candidates are pairs within ``threshold`` bits on the perceptual hash of the thumbnails as
    they are, of the thumbnails aligned (centred and scaled: shifts and crops undone), or, for
    images of at most :data:`_SHIFTED_MAX` px, of one of them moved by one of its own pixels
    against the other as it is (a one-pixel shift changes a tiny image's hash by 30 of 64 bits).
    Candidates are also each image's ``neighbours`` nearest images by the cosine of their 8x8
    averages (:func:`_dedup.descriptors`), as they are and aligned, and for tiny images moved by
    one of their pixels: what finds shifted and cropped copies whose hashes differ by 10-20 bits.
    Each image keeps its ``per_image`` nearest candidates (by that cosine), so the work grows
    linearly with the number of images; each candidate is then confirmed on the pixels
    (:func:`_dedup.verify`), on small images' own pixels too when ``native`` holds them.

    Args:
        hashes, ok: per item, its content hash and whether it was readable.
        thumbs: (items, 32, 32) grey uint8 thumbnails (rows of unreadable items are ignored).
        sides: per item, the side in pixels of the detail it holds (see :func:`_dedup.verify`).
        threshold: perceptual-hash bits two images may differ by to be compared on the pixels.
        per_image: candidates kept per image, the most similar by their 8x8 averages.
        neighbours: nearest neighbours searched per image and view.
        native: the images' own grey pixels where they are at most 32 px (``data check`` keeps them).
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
    ci, cj, dist, unlike = _candidates(raw, aligned, side, threshold, neighbours)
    keep = group_of[idx[ci]] != group_of[idx[cj]]
    ci, cj, dist, unlike = ci[keep], cj[keep], dist[keep], unlike[keep]
    keep = nearest_pairs(ci, cj, unlike, per_image)
    ci, cj, dist = ci[keep], cj[keep], dist[keep]
    confirmed, score = verify(ci, cj, raw, aligned, side, native=native.take(idx) if native is not None else None)
    a, b = idx[ci[confirmed]], idx[cj[confirmed]]
    near = [(int(x), int(y), int(d), round(float(s), 4)) for x, y, d, s in zip(a, b, dist[confirmed], score[confirmed])]
    return Duplicates(exact, near, candidates=len(ci))


_SHIFTED_MAX = 16  # images up to this side (px) are also hashed moved by one of their pixels (larger: the aligned view suffices)


def _unscored(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash-view pairs, with no cosine of their own yet (-1: the raw and aligned ones are computed for every pair)."""
    return i, j, np.full(len(i), -1.0, np.float32)


def _candidates(
    raw: np.ndarray, aligned: np.ndarray, sides: np.ndarray, radius: int, neighbours: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) close in any hash view or among each other's nearest neighbours.

    Returns:
        ``(i, j, hash distance, unlikeness)``: the smallest hash distance over the raw and aligned
        views, and 1 - the largest cosine of the 8x8 averages over the views (what ranks them).
    """
    n = len(raw)
    raw_hash, aligned_hash = phashes(raw), phashes(aligned)
    raw_desc, aligned_desc = descriptors(raw), descriptors(aligned)
    found = [_unscored(*candidate_pairs(h, radius)[:2]) for h in (raw_hash, aligned_hash)]
    for desc in (raw_desc, aligned_desc):
        found.append(neighbour_pairs(desc, desc, neighbours, same=True))
    step = np.rint(THUMB / np.maximum(sides, 1)).astype(np.int64)  # one image pixel, in thumbnail pixels
    for s in np.unique(step[sides <= _SHIFTED_MAX]).tolist():
        rows = np.flatnonzero((step == s) & (sides <= _SHIFTED_MAX))
        for dy, dx in ((0, s), (s, 0), (s, s), (s, -s)):  # the opposite shifts are the same pairs seen from the other side
            moved = shifted(raw[rows], dy, dx)
            q, d, _ = cross_pairs(phashes(moved), raw_hash, radius)
            found.append(_unscored(rows[q], d))
            q, d, cos = neighbour_pairs(descriptors(moved), raw_desc, neighbours, same=False)
            found.append((rows[q], d, cos))  # a shifted copy's cosine is the shifted view's
    a = np.concatenate([f[0] for f in found]).astype(np.int64)
    b = np.concatenate([f[1] for f in found]).astype(np.int64)
    seen = np.concatenate([f[2] for f in found])
    keep = a != b
    key = np.minimum(a[keep], b[keep]) * max(n, 1) + np.maximum(a[keep], b[keep])
    key, where = np.unique(key, return_inverse=True)
    best_seen = np.full(len(key), -1.0, dtype=np.float32)
    np.maximum.at(best_seen, where, seen[keep])
    i, j = key // max(n, 1), key % max(n, 1)
    dist = np.minimum(np.bitwise_count(raw_hash[i] ^ raw_hash[j]), np.bitwise_count(aligned_hash[i] ^ aligned_hash[j])).astype(np.int64)
    cosine = np.maximum(np.einsum("pd,pd->p", raw_desc[i], raw_desc[j]), np.einsum("pd,pd->p", aligned_desc[i], aligned_desc[j]))
    cosine = np.maximum(cosine, best_seen)
    return i, j, dist, 1.0 - cosine
