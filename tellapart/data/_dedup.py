"""Near duplicates in two stages: candidates from hashes and nearest neighbours, then confirmation on the pixels.

A 64-bit DCT hash of a 28 px image cannot tell a 1 from a 7 by another writer, so a hash match is
only a *candidate*. Candidates are found without comparing all pairs: multi-index hashing (split
the hash into ``radius + 1`` chunks; two hashes within ``radius`` bits agree exactly on at least
one chunk, so only items sharing a chunk value are compared), and each image's nearest
neighbours by the cosine of its 8x8 averages (:func:`descriptors`, searched with faiss:
exhaustively up to 20,000 images, with an inverted-file index above), which find the shifted and
cropped copies whose hashes differ by 10-20 bits. Each image keeps only its nearest few
(:func:`nearest_pairs`), so the work grows with the number of images, not with its square, even
on data as dense as Fashion-MNIST. Each candidate is then confirmed on small grey thumbnails:
the Pearson correlation of their pixels, best over small shifts, must reach a floor that
depends on the image size (:func:`min_similarity`). Tiny images need a much higher floor:
distinct handwritten digits correlate at 0.9, while a re-encoded or brightened copy of one image
stays above 0.97; and images of at most 32 px are also compared on their own pixels, unresampled
(:func:`native_similarity`), where a crop or a shift of a copy matches its original exactly. The
floors are calibrated on ``bench/bench_duplicates.py``. Every step is vectorised over all images
or all pairs at once (no per-image or per-pair Python loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FLOORS", "NATIVE_FLOOR", "NATIVE_MAX", "THUMB", "DuplicateCounts", "Native", "canonical", "candidate_pairs", "cross_pairs",
    "descriptors", "min_similarity", "native_similarity", "nearest_pairs", "neighbour_pairs", "pair_key", "phashes", "shifted",
    "similarity", "thumbnail", "thumbnails", "verify",
]

THUMB = 32  # side of the grey thumbnails pairs are confirmed on, pixels (the check preview's size)
NATIVE_MAX = 32  # images with both sides at most this (px) are also compared on their own pixels, unresampled
#: What a pair of small images needs on their own pixels (:func:`native_similarity`): on
#: bench/bench_duplicates.py, shifted and cropped copies score 1.000 (every pixel of the overlap
#: is the original's), distinct candidate pairs at most 0.994 (8 px digits) and 0.988 (Fashion-MNIST).
NATIVE_FLOOR = 0.998
_DESCRIPTOR = 8  # side of the averaged thumbnails candidates are searched on by cosine similarity
_EXACT_SEARCH = 20_000  # up to this many images the neighbour search is exhaustive; above, an inverted-file index
_BUCKET = 4096  # hash-chunk buckets larger than this are searched in a sliding window, not all pairs
_WINDOW = 32  # neighbours (in hash order) each member of such a bucket is compared with

#: What a confirmed near duplicate needs, by the smaller image side (px), interpolated in log2(side)
#: between the rows: (side, raw, raw detail, aligned, aligned detail). A pair is confirmed when
#: its thumbnails correlate at least ``raw`` as they are (best over small shifts) and their
#: detail (each minus its 3x3 local mean) at least ``raw detail``; or the same two floors after
#: both are aligned by :func:`canonical` (what undoes crops). Detail is what tells two plain
#: T-shirts of one silhouette apart: their pixels correlate at 0.99, their detail at 0.9. Up to
#: 28 px the aligned view confirms nothing (a floor above 1): among nearest neighbours, distinct
#: digits and garments align as well as copies do; their crops and shifts are confirmed on their
#: own pixels instead (:data:`NATIVE_FLOOR`). Calibrated on bench/bench_duplicates.py sets with
#: other planted copies (and, at 28 px, other images) than the ones it reports: precision >= 0.995.
FLOORS: tuple[tuple[int, float, float, float, float], ...] = (
    (8, 0.995, 0.80, 1.01, 1.01),
    (28, 0.995, 0.80, 1.01, 1.01),
    (64, 0.91, 0.45, 0.94, 0.70),
    (256, 0.91, 0.45, 0.94, 0.70),
)


def min_similarity(side: int | np.ndarray) -> np.ndarray:
    """The four floors of :data:`FLOORS` for each ``side`` (px): shape (..., 4)."""
    x = np.log2(np.maximum(np.asarray(side, dtype=np.float64), 1.0))
    xs = np.log2([row[0] for row in FLOORS])
    return np.stack([np.interp(x, xs, [row[k] for row in FLOORS]) for k in range(1, 5)], axis=-1)


# ---------------------------------------------------------------------------------------------
# thumbnails and hashes


def _resample_matrix(size_in: int, size_out: int, kind: str = "triangle") -> np.ndarray:
    """(size_out, size_in) weights of a 1-D resize, Pillow's: ``triangle`` is its BILINEAR (antialiased
    when shrinking), ``box`` its BOX (the input pixels whose centres fall in the output pixel)."""
    scale = size_in / size_out
    centres = (np.arange(size_out) + 0.5) * scale  # output pixel centres, in input pixel units
    x = (np.arange(size_in, dtype=np.float64)[None, :] + 0.5 - centres[:, None]) / max(scale, 1.0)
    w = ((x > -0.5) & (x <= 0.5)).astype(np.float64) if kind == "box" else np.clip(1 - np.abs(x), 0, None)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _resize(images: np.ndarray, side: int, kind: str = "triangle") -> np.ndarray:
    """(n, h, w) images resized to (n, side, side) float32, as separable matrix products."""
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:] == (side, side):
        return images
    rows = _resample_matrix(images.shape[1], side, kind)
    cols = _resample_matrix(images.shape[2], side, kind)
    return rows @ images @ cols.T


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A (THUMB, THUMB) grey uint8 copy of (h, w[, channels]) uint8 pixels, as the check preview makes it."""
    return thumbnails(np.asarray(pixels)[None])[0]


def thumbnails(pixels: np.ndarray) -> np.ndarray:
    """(n, THUMB, THUMB) grey uint8 copies of (n, h, w[, channels]) uint8 pixels (a memory map is read in blocks)."""
    n = len(pixels)
    block = max(1, min(4096, 2**24 // max(1, int(np.prod(np.shape(pixels)[1:])))))  # ~16 M values (64 MB as float32) a block
    out = np.empty((n, THUMB, THUMB), dtype=np.uint8)
    weights = np.array([299, 587, 114], dtype=np.float32) / 1000  # ITU-R 601 luma, as Pillow's convert("L")
    for start in range(0, n, block):
        part = np.asarray(pixels[start : start + block])
        if part.ndim == 4:
            part = part[..., 0] if part.shape[3] == 1 else part[..., :3].astype(np.float32) @ weights
        out[start : start + block] = np.clip(_resize(part, THUMB).round(), 0, 255).astype(np.uint8)
    return out


def shifted(thumbs: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``thumbs`` moved ``dy`` pixels down and ``dx`` right, the uncovered border filled by the edge."""
    n, h, w = thumbs.shape
    pad = ((0, 0), (abs(dy), abs(dy)), (abs(dx), abs(dx)))
    big = np.pad(thumbs, pad, mode="edge")
    y0, x0 = abs(dy) - dy, abs(dx) - dx
    return big[:, y0 : y0 + h, x0 : x0 + w]


def _dct_rows(n_in: int, n_out: int = 8) -> np.ndarray:
    """The first ``n_out`` rows of scipy's (unnormalised) DCT-II on ``n_in`` samples."""
    k, x = np.arange(n_out)[:, None], np.arange(n_in)[None, :]
    return 2 * np.cos(np.pi * k * (2 * x + 1) / (2 * n_in))


def phashes(thumbs: np.ndarray, *, block: int = 8192) -> np.ndarray:
    """64-bit perceptual hashes of (n, 32, 32) grey images (imagehash's phash: the signs of the 8x8
    lowest DCT coefficients against their median), computed as two small matrix products."""
    n = len(thumbs)
    out = np.empty(n, dtype=np.uint64)
    basis = _dct_rows(np.shape(thumbs)[1]) if n else None
    for start in range(0, n, block):
        t = np.asarray(thumbs[start : start + block], dtype=np.float64)
        low = (basis @ t @ basis.T).reshape(len(t), 64)
        bits = low > np.median(low, axis=1, keepdims=True)
        out[start : start + block] = np.packbits(bits, axis=1).view(">u8")[:, 0]
    return out


def canonical(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails moved and stretched so their content sits centred at one spread: shifts and crops undone.

    The content is what differs from the background (the median of the border pixels); its
    centre of mass goes to the centre and its spread (standard deviation along each axis) to
    a fixed fraction of the side. A shifted or cropped copy then lines up with its original.
    The warp is a scale and a shift per axis, so it is two batched matrix products (bilinear
    weights; samples outside the image take the background).
    """
    t = np.asarray(thumbs, dtype=np.float32)
    n, side = t.shape[0], t.shape[1]
    if n == 0:
        return np.zeros_like(thumbs, dtype=np.uint8)
    border = np.concatenate([t[:, 0, :], t[:, -1, :], t[:, 1:-1, 0], t[:, 1:-1, -1]], axis=1)
    fill = np.round(np.median(border, axis=1)).astype(np.float32)
    weight = np.abs(t - fill[:, None, None])
    total = weight.sum((1, 2)) + 1e-6
    grid = np.arange(side, dtype=np.float32) + 0.5
    wy, wx = weight.sum(2), weight.sum(1)
    cy, cx = (wy * grid).sum(1) / total, (wx * grid).sum(1) / total
    sy = np.sqrt((wy * (grid - cy[:, None]) ** 2).sum(1) / total) + 1e-3
    sx = np.sqrt((wx * (grid - cx[:, None]) ** 2).sum(1) / total) + 1e-3
    spread = side / 5.0  # target standard deviation, pixels: keeps most content inside the frame
    out = np.empty((n, side, side), dtype=np.uint8)
    for start in range(0, n, 2048):  # blocks of images: the (block, side, side) weights stay in cache
        part = slice(start, start + 2048)
        rows, cols = _warp_matrix(cy[part], sy[part] / spread, side), _warp_matrix(cx[part], sx[part] / spread, side)
        warped = fill[part, None, None] + rows @ (t[part] - fill[part, None, None]) @ cols.transpose(0, 2, 1)
        out[part] = np.clip(warped.round(), 0, 255)
    return out


def _warp_matrix(centre: np.ndarray, scale: np.ndarray, side: int) -> np.ndarray:
    """(n, side, side) bilinear weights: output pixel u samples input ``centre + (u + 0.5 - side/2) * scale``."""
    u = np.arange(side, dtype=np.float32) + 0.5
    at = centre[:, None] + (u[None, :] - side / 2.0) * scale[:, None] - 0.5  # input pixel index, fractional
    k = np.arange(side, dtype=np.float32)
    return np.clip(1 - np.abs(at[:, :, None] - k[None, None, :]), 0, None)  # out-of-range weight is the background's


# ---------------------------------------------------------------------------------------------
# candidates


def candidate_pairs(phashes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) of 64-bit hashes within ``radius`` bits, found by multi-index hashing.

    A chunk value shared by more than ``_BUCKET`` items (a flood of near-blank images) is
    searched among hash-order neighbours only, which keeps the work linear.

    Returns:
        ``(i, j, distance)`` int64 arrays, sorted by (i, j).
    """
    values = np.asarray(phashes, dtype=np.uint64)
    n = len(values)
    radius = max(0, min(int(radius), 63))
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty, empty
    keys: list[np.ndarray] = []
    for chunk in _chunks(values, radius):
        order = np.argsort(chunk, kind="stable")
        sorted_chunk = chunk[order]
        starts = np.flatnonzero(np.r_[True, sorted_chunk[1:] != sorted_chunk[:-1]])
        sizes = np.diff(np.r_[starts, n])
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = order[start : start + size]
            close = _close_pairs if size <= _BUCKET else _window_pairs
            keys.append(close(members, values, radius, n))
    if not keys:
        return empty, empty, empty
    key = np.unique(np.concatenate(keys))
    i, j = key // n, key % n
    return i, j, np.bitwise_count(values[i] ^ values[j]).astype(np.int64)


def _chunks(values: np.ndarray, radius: int) -> list[np.ndarray]:
    """The ``radius + 1`` chunk values of each hash (pigeonhole: hashes within ``radius`` bits share one)."""
    bounds = np.linspace(0, 64, radius + 2).round().astype(int)
    return [(values >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _close_pairs(members: np.ndarray, values: np.ndarray, radius: int, n: int) -> np.ndarray:
    """Pair keys ``i * n + j`` (i < j) among ``members`` within ``radius`` bits; blocks bound memory."""
    members = np.sort(members).astype(np.int64)
    v = values[members]
    out = []
    block = max(1, 4_000_000 // len(members))  # rows per block: at most 4e6 distances in memory
    for start in range(0, len(members), block):
        part = v[start : start + block]
        dist = np.bitwise_count(part[:, None] ^ v[None, :])
        rows, cols = np.nonzero(dist <= radius)
        rows += start
        keep = rows < cols
        out.append(members[rows[keep]] * n + members[cols[keep]])
    return np.concatenate(out)


def _window_pairs(members: np.ndarray, values: np.ndarray, radius: int, n: int) -> np.ndarray:
    """Like :func:`_close_pairs`, but each member is compared with its ``_WINDOW`` successors in hash order."""
    members = members[np.argsort(values[members], kind="stable")].astype(np.int64)
    v = values[members]
    out = []
    for off in range(1, min(_WINDOW, len(members) - 1) + 1):
        near = np.flatnonzero(np.bitwise_count(v[:-off] ^ v[off:]) <= radius)
        a, b = members[near], members[near + off]
        out.append(np.minimum(a, b) * n + np.maximum(a, b))
    return np.concatenate(out)


def cross_pairs(queries: np.ndarray, database: np.ndarray, radius: int, *, max_per_bucket: int = _BUCKET) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query, database item) pair of 64-bit hashes within ``radius`` bits (multi-index hashing).

    A query is compared with at most ``max_per_bucket`` database items per shared chunk value.

    Returns:
        ``(q, d, distance)`` int64 arrays, unique pairs.
    """
    q_values = np.asarray(queries, dtype=np.uint64)
    d_values = np.asarray(database, dtype=np.uint64)
    radius = max(0, min(int(radius), 63))
    empty = np.zeros(0, dtype=np.int64)
    if not len(q_values) or not len(d_values):
        return empty, empty, empty
    keys = []
    for q_chunk, d_chunk in zip(_chunks(q_values, radius), _chunks(d_values, radius)):
        order = np.argsort(d_chunk, kind="stable")
        sorted_chunk = d_chunk[order]
        lo = np.searchsorted(sorted_chunk, q_chunk, "left")
        count = np.minimum(np.searchsorted(sorted_chunk, q_chunk, "right") - lo, max_per_bucket)
        for part in _spans(count, 4_000_000):  # at most 4e6 comparisons in memory
            reps = count[part]
            q = np.repeat(part, reps)
            within = np.arange(len(q)) - np.repeat(np.cumsum(reps) - reps, reps)
            d = order[np.repeat(lo[part], reps) + within]
            close = np.bitwise_count(q_values[q] ^ d_values[d]) <= radius
            keys.append(q[close].astype(np.int64) * len(d_values) + d[close])
    key = np.unique(np.concatenate(keys)) if keys else empty
    q, d = key // len(d_values), key % len(d_values)
    return q, d, np.bitwise_count(q_values[q] ^ d_values[d]).astype(np.int64)


def _spans(count: np.ndarray, budget: int) -> list[np.ndarray]:
    """Consecutive index ranges of ``count`` whose totals stay near ``budget``."""
    ends = np.searchsorted(np.cumsum(count), np.arange(budget, int(count.sum()) + budget, budget), "right")
    edges = np.unique(np.r_[0, np.maximum(ends, 1), len(count)].clip(0, len(count)))
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]


def nearest_pairs(i: np.ndarray, j: np.ndarray, distance: np.ndarray, k: int) -> np.ndarray:
    """Which pairs are among the ``k`` nearest (by ``distance``) of at least one of their two items.

    Bounds the candidates to ``k`` per item: on dense data (thousands of look-alike T-shirts)
    the pairs within a hash radius grow with the square of the number of images.

    Returns:
        a bool mask over the pairs.
    """
    if not len(i):
        return np.zeros(0, dtype=bool)
    ends = np.concatenate([i, j])
    pair = np.concatenate([np.arange(len(i))] * 2)
    order = np.lexsort((pair, np.concatenate([distance, distance]), ends))
    ends = ends[order]
    first = np.flatnonzero(np.r_[True, ends[1:] != ends[:-1]])
    rank = np.arange(len(ends)) - np.repeat(first, np.diff(np.r_[first, len(ends)]))
    keep = np.zeros(len(i), dtype=bool)
    keep[pair[order][rank < k]] = True
    return keep


def descriptors(thumbs: np.ndarray) -> np.ndarray:
    """(n, 64) float32 unit vectors: each (n, 32, 32) thumbnail averaged to 8x8, minus its mean.

    Their cosine is the Pearson correlation of the 8x8 averages: a one-pixel shift or a small crop
    of a 28 px image barely moves it, where it flips 10-20 of a perceptual hash's 64 bits.
    """
    x = _resize(np.asarray(thumbs, dtype=np.float32), _DESCRIPTOR, "box").reshape(len(thumbs), -1)
    x -= x.mean(1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-3)
    return np.ascontiguousarray(x, dtype=np.float32)


def neighbour_pairs(queries: np.ndarray, database: np.ndarray, k: int, *, same: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest database vectors by cosine (faiss), as pairs.

    Exhaustive up to ``_EXACT_SEARCH`` database vectors; above, an inverted-file index (about
    4·sqrt(n) k-means cells, the query's 8 nearest cells searched), so 100,000 images take seconds.

    Args:
        queries, database: unit vectors from :func:`descriptors`.
        same: the queries are the database (row ``q`` is item ``q``): a query's own row is skipped.

    Returns:
        ``(q, d, cosine)`` arrays, ``k`` rows per query at most.
    """
    import faiss

    n, dim = database.shape
    k = min(k, n - (1 if same else 0))
    empty = np.zeros(0, dtype=np.int64)
    if k <= 0 or not len(queries):
        return empty, empty, np.zeros(0, dtype=np.float32)
    if n <= _EXACT_SEARCH:
        index = faiss.IndexFlatIP(dim)
    else:
        cells = min(int(4 * np.sqrt(n)), n // 40)  # faiss wants 39+ training points a cell
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)  # the cells do not depend on the run
        index.train(database[np.sort(rng.choice(n, min(n, 40 * cells), replace=False))])
        index.nprobe = 8
    index.add(database)
    cosine, found = index.search(queries, k + (1 if same else 0))
    q = np.repeat(np.arange(len(queries), dtype=np.int64), found.shape[1])
    d, cosine = found.ravel().astype(np.int64), cosine.ravel()
    keep = (d >= 0) & ((q != d) if same else True)
    return q[keep], d[keep], cosine[keep]


# ---------------------------------------------------------------------------------------------
# confirmation on the pixels


def similarity(a: np.ndarray, b: np.ndarray, max_shift: int = 1) -> np.ndarray:
    """Pearson correlation of image pairs, the best over shifts of up to ``max_shift`` pixels.

    Args:
        a, b: (pairs, side, side) grey images; only the overlap of a shifted pair is compared.
        max_shift: largest shift tried along each axis, pixels.

    Returns:
        (pairs,) float32 in [-1, 1]; a flat image correlates 0 with anything.
    """
    a = np.asarray(a, dtype=np.float32)
    images = np.concatenate([a, np.asarray(b, dtype=np.float32)])
    return _best_correlation(_standardise(images), np.arange(len(a)), np.arange(len(a), 2 * len(a)), max_shift)


def _standardise(images: np.ndarray) -> np.ndarray:
    """Each image minus its mean over its standard deviation (float32): correlations of crops stay exact in float32."""
    images = np.asarray(images, dtype=np.float32)
    centred = images - images.mean((1, 2), keepdims=True)
    std = np.sqrt((centred * centred).mean((1, 2), keepdims=True))
    return centred / np.maximum(std, 1e-3)


def _best_correlation(x: np.ndarray, ia: np.ndarray, ja: np.ndarray, max_shift: int, block: int = 8192) -> np.ndarray:
    """Best Pearson correlation over shifts of images ``x[ia]`` and ``x[ja]`` (on their overlap).

    The crops' sums and squared sums are per image, computed once; per pair and shift only
    the cross products remain, one pass over the overlap.
    """
    side = x.shape[1]
    best = np.full(len(ia), -1.0, dtype=np.float32)
    shifts = range(-max_shift, max_shift + 1)
    span = {d: slice(max(d, 0), side + min(d, 0)) for d in shifts}  # the first image's rows (columns) for shift d
    sums, squares = {}, {}
    for dx in shifts:  # per image, the sum and squared sum of each crop: row sums over the columns kept, then rows
        rows, rows_sq = x[:, :, span[dx]].sum(2, dtype=np.float64), (x[:, :, span[dx]] ** 2).sum(2, dtype=np.float64)
        for dy in shifts:
            sums[dy, dx], squares[dy, dx] = rows[:, span[dy]].sum(1), rows_sq[:, span[dy]].sum(1)
    for start in range(0, len(ia), block):
        ra, rb = ia[start : start + block], ja[start : start + block]
        a, b = x[ra], x[rb]
        for dy in shifts:
            for dx in shifts:
                size = (side - abs(dy)) * (side - abs(dx))
                if size == 0:  # a shift as large as the image (1 px images): no overlap to compare
                    continue
                cross = np.einsum("pyx,pyx->p", a[:, span[dy], span[dx]], b[:, span[-dy], span[-dx]]).astype(np.float64)
                ma, mb = sums[dy, dx][ra] / size, sums[-dy, -dx][rb] / size
                cov = cross - size * ma * mb
                var = np.maximum(squares[dy, dx][ra] - size * ma * ma, 0) * np.maximum(squares[-dy, -dx][rb] - size * mb * mb, 0)
                r = np.where(var > (1e-6 * size) ** 2, cov / np.sqrt(np.maximum(var, 1e-24)), 0.0)
                np.maximum(best[start : start + block], r, out=best[start : start + block], casting="unsafe")
    return best


@dataclass(frozen=True)
class Native:
    """Small images' own grey pixels: ``pixels[k, :h, :w]`` with ``(h, w) = shapes[k]``; ``h == 0``: none kept."""

    pixels: np.ndarray  # (items, NATIVE_MAX, NATIVE_MAX) uint8, top-left aligned
    shapes: np.ndarray  # (items, 2) int64 heights and widths; 0 where the image is larger than NATIVE_MAX

    @classmethod
    def empty(cls, items: int) -> Native:
        return cls(np.zeros((items, NATIVE_MAX, NATIVE_MAX), np.uint8), np.zeros((items, 2), np.int64))

    def put(self, k: int, grey: np.ndarray) -> None:
        """Keeps item ``k``'s (h, w) grey pixels when both sides are at most NATIVE_MAX."""
        h, w = grey.shape[:2]
        if h <= NATIVE_MAX and w <= NATIVE_MAX:
            self.pixels[k, :h, :w] = grey.reshape(h, w)
            self.shapes[k] = (h, w)

    def take(self, rows: np.ndarray) -> Native:
        return Native(self.pixels[rows], self.shapes[rows])


def native_similarity(i: np.ndarray, j: np.ndarray, native: Native, max_shift: int = 1, block: int = 4096) -> np.ndarray:
    """Pearson correlation of small image pairs on their own pixels, best over placements.

    The smaller image slides over the larger (every offset that keeps it inside, plus
    ``max_shift`` pixels beyond each edge), and only the overlap counts: a cropped copy is a
    window of its original, a shifted copy is the original moved, and both correlate 1.0 with
    no resampling in between. Pairs with a side that is not kept, or whose sides differ by more
    than 15% or 2 px (a resized copy: the thumbnails compare those), score -1; so do overlaps under 70%
    of the smaller image.

    Returns:
        (pairs,) float32 in [-1, 1].
    """
    out = np.full(len(i), -1.0, dtype=np.float32)
    if not len(i):
        return out
    ha, wa, hb, wb = native.shapes[i, 0], native.shapes[i, 1], native.shapes[j, 0], native.shapes[j, 1]
    big = np.maximum(np.maximum(ha, hb), np.maximum(wa, wb))
    ok = (np.minimum(ha, hb) > 0) & (np.minimum(wa, wb) > 0)
    ok &= (np.abs(ha - hb) <= np.maximum(2, 0.15 * big)) & (np.abs(wa - wb) <= np.maximum(2, 0.15 * big))
    dh, dw = ha - hb, wa - wb
    square = ok & (ha == wa) & (ha == hb) & (hb == wb)
    for side in np.unique(ha[square]).tolist():  # one square size (the common case): overlaps from per-image sums
        sel = np.flatnonzero(square & (ha == side))
        rows = np.unique(np.concatenate([i[sel], j[sel]]))
        crops = native.pixels[rows, :side, :side].astype(np.float32)
        out[sel] = _best_correlation(crops, np.searchsorted(rows, i[sel]), np.searchsorted(rows, j[sel]), max_shift, block)
    ok &= ~square
    for gh, gw in {(int(a), int(b)) for a, b in zip(dh[ok], dw[ok])}:
        sel = np.flatnonzero(ok & (dh == gh) & (dw == gw))
        for start in range(0, len(sel), block):
            part = sel[start : start + block]
            a, b = _masked(native, i[part]), _masked(native, j[part])
            out[part] = _best_overlap(*a, *b, gh, gw, max_shift)
    return out


def _masked(native: Native, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows' pixels as float32 and their masks (True inside each image's own height and width)."""
    grid = np.arange(NATIVE_MAX)
    shapes = native.shapes[rows]
    mask = (grid[None, :, None] < shapes[:, 0, None, None]) & (grid[None, None, :] < shapes[:, 1, None, None])
    return native.pixels[rows].astype(np.float32), mask


def _best_overlap(a: np.ndarray, ma: np.ndarray, b: np.ndarray, mb: np.ndarray, dh: int, dw: int, s: int) -> np.ndarray:
    """Best overlap correlation of ``b`` placed at offsets (dy, dx) in ``a``; images zero outside their masks."""
    side = a.shape[1]
    ma, mb = ma.astype(np.float32), mb.astype(np.float32)
    area = np.minimum(ma.sum((1, 2)), mb.sum((1, 2)))
    best = np.full(len(a), -1.0, dtype=np.float32)
    for dy in range(min(0, dh) - s, max(0, dh) + s + 1):
        for dx in range(min(0, dw) - s, max(0, dw) + s + 1):
            ya, yb = slice(max(dy, 0), side + min(dy, 0)), slice(max(-dy, 0), side + min(-dy, 0))
            xa, xb = slice(max(dx, 0), side + min(dx, 0)), slice(max(-dx, 0), side + min(-dx, 0))
            pa, pma, pb, pmb = a[:, ya, xa], ma[:, ya, xa], b[:, yb, xb], mb[:, yb, xb]
            both = pma * pmb
            n = both.sum((1, 2), dtype=np.float64)
            sa, sb = (pa * pmb).sum((1, 2), dtype=np.float64), (pb * pma).sum((1, 2), dtype=np.float64)
            saa, sbb = (pa * pa * pmb).sum((1, 2), dtype=np.float64), (pb * pb * pma).sum((1, 2), dtype=np.float64)
            sab = np.einsum("pyx,pyx->p", pa, pb).astype(np.float64)
            safe = np.maximum(n, 1)
            cov = sab - sa * sb / safe
            var = np.maximum(saa - sa * sa / safe, 0) * np.maximum(sbb - sb * sb / safe, 0)
            r = np.where((n >= 0.7 * area) & (var > 1e-6 * safe * safe), cov / np.sqrt(np.maximum(var, 1e-24)), -1.0)
            np.maximum(best, r, out=best, casting="unsafe")
    return best


def verify(
    i: np.ndarray, j: np.ndarray, thumbs: np.ndarray, aligned: np.ndarray, sides: np.ndarray, *,
    native: Native | None = None, block: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Which candidate pairs are near duplicates on the pixels (see :data:`FLOORS`).

    Pairs are compared at the resolution the smaller image really has (its side, at most
    :data:`THUMB`): an 8 px digit is compared on 8x8 pixels, where a one-pixel shift is a
    one-pixel shift, not four pixels of interpolation. All pairs of one resolution are
    compared at once (in blocks of ``block`` pairs).

    Args:
        i, j: candidate pairs (item indices).
        thumbs: (items, THUMB, THUMB) grey uint8 thumbnails; ``aligned``: the same after :func:`canonical`.
        sides: per item, the side (px) of the detail it holds: min(width, height), at most the
            cache's size in ``prepare``.
        native: small images' own pixels, when the caller has them (``data check``); a pair the
            thumbnails do not confirm is confirmed when these correlate at least
            :data:`NATIVE_FLOOR` (:func:`native_similarity`: what confirms crops and shifts of tiny images).

    Returns:
        ``(confirmed, score)``: a bool mask over the pairs and their similarity (the larger of
        the raw and aligned correlations).
    """
    confirmed = np.zeros(len(i), dtype=bool)
    score = np.zeros(len(i), dtype=np.float32)
    side = np.minimum(sides[i], sides[j]) if len(i) else np.zeros(0, dtype=np.int64)
    grid = np.clip(side, 4, THUMB)
    for g in np.unique(grid).tolist():
        sel = np.flatnonzero(grid == g)
        rows = np.unique(np.concatenate([i[sel], j[sel]]))
        ia, ja = np.searchsorted(rows, i[sel]), np.searchsorted(rows, j[sel])
        shift = max(1, round(0.05 * g))
        floors = min_similarity(side[sel])
        ok = np.zeros(len(sel), dtype=bool)
        best = np.zeros(len(sel), dtype=np.float32)
        for k, images in enumerate((thumbs, aligned)):
            x = _standardise(_resize(images[rows], g, "box"))  # area averaging back to the image's own grid
            s = _best_correlation(x, ia, ja, shift, block)
            passed = s >= floors[:, 2 * k]
            if passed.any():
                detail = _standardise(_detail(x))
                passed[passed] = _best_correlation(detail, ia[passed], ja[passed], shift, block) >= floors[passed, 2 * k + 1]
            ok |= passed
            best = np.maximum(best, s)
        confirmed[sel], score[sel] = ok, best
    if native is not None:
        todo = np.flatnonzero(~confirmed)
        r = native_similarity(i[todo], j[todo], native)
        confirmed[todo] = r >= NATIVE_FLOOR
        score[todo] = np.maximum(score[todo], r)
    return confirmed, score


def _detail(images: np.ndarray) -> np.ndarray:
    """Each image minus its 3x3 local mean: texture and edges, without the silhouette."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")  # scipy's uniform_filter, mode="nearest"
    h, w = images.shape[1], images.shape[2]
    local = sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
    return images - local


def pair_key(a_split: str, b_split: str) -> str:
    """``"test~train"``: the two splits of a pair, sorted, as the manifest's count keys spell them."""
    return "~".join(sorted((a_split, b_split)))


@dataclass(frozen=True)
class DuplicateCounts:
    """Exact numbers of duplicate pairs a cache holds, by kind and split pair (``None``: not computed).

    Read from a manifest's ``duplicates``; caches written before counts were kept lack them, and
    their near pairs were never confirmed on the pixels, so they count as not computed.
    """

    exact_groups: int
    near_pairs: int | None
    by_split_pair: dict[str, dict[str, int]]  # kind (exact, near) -> "a~b" -> pairs
    examples: dict[str, list[dict[str, Any]]]  # kind -> cross-split pairs listed (capped)

    @classmethod
    def from_manifest(cls, dup: dict[str, Any]) -> DuplicateCounts:
        examples = {k: list(dup.get(f"cross_split_{k}", [])) for k in ("exact", "near")}
        if "by_split_pair" in dup:
            return cls(int(dup.get("exact_groups_count", 0)), int(dup["near_pairs_count"]), dup["by_split_pair"], examples)
        # older manifests: exact pairs were listed in full below 1000; near pairs were unconfirmed
        exact: dict[str, int] = {}
        for p in examples["exact"]:
            exact[pair_key(p["a_split"], p["b_split"])] = exact.get(pair_key(p["a_split"], p["b_split"]), 0) + 1
        return cls(int(dup.get("exact_groups_count", 0)), None, {"exact": exact}, {"exact": examples["exact"], "near": []})

    def crossing(self, kind: str, split: str | None = None) -> int:
        """Pairs of ``kind`` whose two images lie in different splits (one of them ``split``, if given)."""
        return sum(
            n for key, n in self.by_split_pair.get(kind, {}).items()
            if len(set(key.split("~"))) == 2 and (split is None or split in key.split("~"))
        )


