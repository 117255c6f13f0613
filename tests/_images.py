"""Tiny images and dataset files written by the data tests themselves (no downloads).

Test modules import the writers they use (``from _images import write_image``); the fixtures
built from them live in ``conftest.py``.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["make_image", "png_bomb", "write_cifar_batch", "write_class_folders", "write_idx", "write_image"]


def make_image(size: tuple[int, int] = (16, 16), mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth random image (upsampled 4x4 noise): distinct per seed, even to a perceptual hash."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
    img = coarse.resize(size, Image.Resampling.BICUBIC)
    return img if mode == "RGB" else img.convert(mode)


def write_image(path: Path, size: tuple[int, int] = (16, 16), mode: str = "RGB", seed: int = 0, **save: object) -> Path:
    """Writes ``make_image(size, mode, seed)`` to ``path`` (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(size, mode, seed).save(path, **save)
    return path


def write_class_folders(
    root: Path,
    counts: Mapping[str, int],
    *,
    split: str | None = None,
    size: tuple[int, int] = (16, 16),
    ext: str = ".png",
    seed: int = 0,
) -> list[Path]:
    """``root/[split/]class/NNN.ext`` with ``counts[class]`` distinct images each; returns the files."""
    files = []
    base = root / split if split else root
    for k, (label, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            files.append(write_image(base / label / f"{i:03d}{ext}", size, seed=seed + 1000 * k + i))
    return files


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """An unsigned-byte IDX file: magic 0x00000803/0801, big-endian dimensions, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], *, key: bytes = b"labels", protocol: int = 2) -> Path:
    """A CIFAR python batch: {b"data": (N, 3072) uint8 in CHW order, b"labels": [...]}."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {b"batch_label": b"a batch", b"data": data, key: labels, b"filenames": [b"x.png"] * len(labels)}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return path


def png_bomb(width: int = 17_000, height: int = 17_000) -> bytes:
    """A valid 1-bit all-black PNG of ``width x height`` pixels that is only a few kilobytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" * (1 + (width + 7) // 8)) * height  # filter byte + packed bits per row
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
