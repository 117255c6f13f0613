"""Near duplicates: planted true pairs are found, look-alikes that collide on the hash are not, counts are exact."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tellapart.data import PrepareConfig, Preprocess, check_source, open_source, prepare
from tellapart.data._dedup import DuplicateCounts, Native, candidate_pairs, cross_pairs, phashes, thumbnails
from tellapart.data._scan import find_duplicates


def _digit(rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A smooth random blob on black: distinct per draw, digit-sized."""
    coarse = rng.integers(0, 256, (5, 5)).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((size - 8, size - 8), Image.Resampling.BICUBIC))
    out = np.zeros((size, size), np.uint8)
    out[4:-4, 4:-4] = img
    return out


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def test_candidates_are_every_pair_within_the_radius() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**63, 400, dtype=np.int64).astype(np.uint64)
    values[200:260] = values[:60] ^ np.uint64(0b10110)  # 3 bits apart
    i, j, d = candidate_pairs(values, 4)
    brute = {(a, b) for a in range(400) for b in range(a + 1, 400) if bin(int(values[a] ^ values[b])).count("1") <= 4}
    assert set(zip(i.tolist(), j.tolist())) == brute and len(brute) >= 60 and (d <= 4).all()


def test_planted_true_pairs_are_found_and_hash_collisions_are_not() -> None:
    rng = np.random.default_rng(1)
    base = [_digit(rng) for _ in range(6)]
    true = [
        _jpeg(base[0], 70),
        np.roll(base[1], 1, axis=1),  # shifted a pixel
        np.clip(base[2].astype(int) * 1.1 + 10, 0, 255).astype(np.uint8),  # brighter
    ]
    # false: a look-alike that collides on the hash (same silhouette, other detail)
    lookalike = np.clip(base[3].astype(int) + rng.integers(-60, 60, base[3].shape) * (base[3] > 0), 0, 255).astype(np.uint8)
    images = np.stack([*base, *true, lookalike])
    thumbs = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BILINEAR)) for a in images])
    ph = phashes(thumbs)
    assert bin(int(ph[3] ^ ph[9])).count("1") <= 8  # the look-alike is a hash candidate at radius 8
    native = Native.empty(len(images))  # what data check keeps of images this small: their own pixels
    for k, a in enumerate(images):
        native.put(k, a)
    dups = find_duplicates(
        [str(k) for k in range(len(images))], thumbs, [True] * len(images), sides=[28] * len(images), threshold=8, native=native
    )
    assert {(a, b) for a, b, *_ in dups.near} == {(0, 6), (1, 7), (2, 8)}


def test_cross_pairs_are_every_query_within_the_radius() -> None:
    rng = np.random.default_rng(4)
    db = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    queries = np.r_[db[:40] ^ np.uint64(0b1011), rng.integers(0, 2**63, 60, dtype=np.int64).astype(np.uint64)]
    q, d, dist = cross_pairs(queries, db, 4)
    brute = {(a, b) for a in range(100) for b in range(300) if bin(int(queries[a] ^ db[b])).count("1") <= 4}
    assert set(zip(q.tolist(), d.tolist())) == brute and len(brute) >= 40 and (dist <= 4).all()


def test_candidates_per_image_are_bounded_on_dense_data() -> None:
    # 400 look-alikes: every pair is within the hash radius, so all-pairs would compare 79,800
    rng = np.random.default_rng(5)
    base = _digit(rng, 32)
    images = np.clip(base[None].astype(int) + rng.integers(-3, 4, (400, 32, 32)), 0, 255).astype(np.uint8)
    dups = find_duplicates([str(k) for k in range(400)], images, [True] * 400, sides=[32] * 400, per_image=5)
    assert 0 < dups.candidates <= 5 * 400


def test_tiny_images_moved_by_one_pixel_are_found() -> None:
    from sklearn.datasets import load_digits

    digits = (load_digits().images[:200] * (255 / 16)).round().astype(np.uint8)  # 8 px: a pixel moves the hash ~30 bits
    moved = [np.roll(digits[k], (k % 2, 1), axis=(0, 1)) for k in range(20)]  # right, or right and down
    images = np.concatenate([digits, np.stack(moved)])
    dups = find_duplicates([str(k) for k in range(len(images))], thumbnails(images), [True] * len(images), sides=[8] * len(images))
    found = {(a, b) for a, b, *_ in dups.near}
    assert len(found & {(k, 200 + k) for k in range(20)}) >= 12 and found <= {(k, 200 + k) for k in range(20)}  # 8 without the shifted hashes


def _write(folder: Path, name: str, pixels: np.ndarray) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / name)


def test_counts_are_exact_beyond_a_thousand_and_only_real_leakage_warns(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "ds"
    for k in range(1100):  # 1,100 train images, each copied (shifted by a pixel) into test: real leakage
        img = _digit(rng, 16)
        _write(root, f"train/c{k % 2}/{k:04d}.png", img)
        _write(root, f"test/c{k % 2}/{k:04d}.png", np.roll(img, 1, axis=0))
    report = check_source(open_source(root), workers=1, progress=False)
    assert report.cross_split_counts["near"] == {"test~train": 1100}
    assert len(report.near_duplicates) == 1100 and any("1100 duplicate pair(s)" in w for w in report.warnings)

    cache = prepare(open_source(root), tmp_path / "cache", PrepareConfig(preprocess=Preprocess(size=16, grayscale=True), workers=1), progress=False)
    dup = cache.manifest["duplicates"]
    assert dup["near_pairs_count"] == 1100 and sum(dup["by_split_pair"]["near"].values()) == 1100  # test~train and test~val
    assert len(dup["cross_split_near"]) == 1000  # listed examples capped, counts not
    assert cache.duplicates.crossing("near", "test") == 1100
    assert "0 exact and 1100 near" in cache.summary() and "test~train" in cache.summary()


def test_distinct_images_give_no_warning(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "ds"
    for k in range(300):
        _write(root, f"{'test' if k % 5 == 0 else 'train'}/c{k % 3}/{k:04d}.png", _digit(rng, 16))
    report = check_source(open_source(root), workers=1, progress=False)
    assert report.near_duplicates == [] and report.warnings == []


def test_old_manifests_read_as_not_computed() -> None:
    old = {"exact_groups_count": 1, "cross_split_exact": [{"a": "x", "a_split": "train", "b": "y", "b_split": "test"}],
           "cross_split_near": [{"a": "p", "a_split": "train", "b": "q", "b_split": "test", "distance": 3}]}  # fmt: skip
    counts = DuplicateCounts.from_manifest(old)
    assert counts.near_pairs is None and counts.crossing("exact", "test") == 1 and counts.crossing("near") == 0


def test_crops_and_shifts_of_real_tiny_digits_are_found_on_their_own_pixels(tmp_path: Path) -> None:
    # 8 px digits: a one-pixel crop or shift moves the hash by 10-30 bits and the 32 px
    # thumbnails by more than distinct digits differ; the copies are windows of their originals
    from sklearn.datasets import load_digits

    digits = (load_digits().images[:400] * (255 / 16)).round().astype(np.uint8)
    root = tmp_path / "digits"
    planted = set()
    for k, d in enumerate(digits):
        _write(root, f"c{k % 3}/{k:04d}.png", d)
    for n, k in enumerate(range(0, 400, 10)):  # 40 copies: 20 with a column or row cropped off, 20 moved by a pixel
        copy = digits[k][:, 1:] if n % 4 == 0 else digits[k][:-1] if n % 4 == 1 else np.roll(digits[k], 1, axis=n % 2)
        _write(root, f"c{k % 3}/copy{n:02d}.png", copy)
        planted.add(frozenset((f"c{k % 3}/{k:04d}.png", f"c{k % 3}/copy{n:02d}.png")))
    report = check_source(open_source(root), workers=1, progress=False)
    found = {frozenset((d["a"], d["b"])) for d in report.near_duplicates}
    assert len(found & planted) >= 36  # at least 90% of the planted copies
    assert len(found - planted) <= 1  # and at most one pair of distinct digits (two 1s can be identical)


def test_native_similarity_matches_windows_and_leaves_resized_copies_to_the_thumbnails() -> None:
    from tellapart.data._dedup import native_similarity

    rng = np.random.default_rng(7)
    a, other = _digit(rng, 28), _digit(rng, 28)
    resized = np.asarray(Image.fromarray(a).resize((20, 20), Image.Resampling.BICUBIC))
    native = Native.empty(5)
    for k, img in enumerate([a, a[2:, 1:-1], np.roll(a, 1, axis=1), other, resized]):
        native.put(k, img)
    r = native_similarity(np.zeros(4, dtype=np.int64), np.arange(1, 5), native)
    assert r[0] > 0.9999 and r[1] > 0.999  # a crop (26x26 window) and a one-pixel shift
    assert r[2] < 0.9  # another image
    assert r[3] == -1.0  # 20 of 28 px: not compared here (more than 15% smaller)


def test_neighbour_search_above_the_exhaustive_size_finds_planted_copies(capfd: pytest.CaptureFixture[str]) -> None:
    from tellapart.data._dedup import _EXACT_SEARCH, neighbour_pairs

    rng = np.random.default_rng(11)
    n = _EXACT_SEARCH + 5_000  # the inverted-file index, not the exhaustive one
    x = rng.normal(size=(n, 64)).astype(np.float32)
    x[n - 200 :] = x[:200] + rng.normal(0, 0.05, (200, 64)).astype(np.float32)  # 200 near copies of the first 200
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q, d, cosine = neighbour_pairs(x, x, 5, same=True)
    found = {(int(a), int(b)) for a, b in zip(q, d)}
    assert sum((k, n - 200 + k) in found for k in range(200)) >= 196 and (q != d).all()
    assert "WARNING" not in capfd.readouterr().err  # enough training points for every cell


def test_one_pixel_and_one_line_images_are_compared_without_warnings() -> None:
    import warnings

    rng = np.random.default_rng(12)
    shapes = [(1, 1), (1, 1), (1, 30), (30, 1), (2, 2), (8, 8), (8, 7)]
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    images[1] = images[0].copy()
    native = Native.empty(len(images))
    for k, a in enumerate(images):
        native.put(k, a)
    thumbs = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BILINEAR)) for a in images])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a division by an empty overlap would warn (and score nan)
        dups = find_duplicates([str(k) for k in range(len(images))], thumbs, [True] * len(images), sides=[min(s) for s in shapes], native=native)
    assert all(np.isfinite(s) for *_, s in dups.near)
