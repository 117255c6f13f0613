"""Decode one image (file, bytes or array) into fixed-size uint8 pixels, plus what `check` needs.

Every image is decoded exactly once per cache. JPEGs are decoded at reduced size with Pillow's
``draft`` (DCT scaling) when the target is much smaller than the file, which is most of the
cost of turning 1024x1024 photos into 64-150 px training images.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import imagehash
import numpy as np
from PIL import Image, ImageOps

__all__ = ["Decoded", "Fit", "Payload", "Preprocess", "decode", "MAX_PIXELS"]

Fit = Literal["stretch", "center-crop", "pad"]
FITS: tuple[str, ...] = ("stretch", "center-crop", "pad")

#: What a source hands the decoder: a file path (the decoder reads it), encoded bytes, or pixels.
Payload = Union[str, bytes, np.ndarray]

#: Images with more pixels than this are refused as decompression bombs (about 16k x 16k).
MAX_PIXELS = 268_435_456
# Pillow warns above its own limit (89M pixels, which decode turns into a refusal) and fails above
# twice that, so without this a 10k x 10k image would be refused as "over MAX_PIXELS". Raised only.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class Preprocess:
    """How raw images become cache pixels. Stored in the cache and in every checkpoint."""

    size: int = 64  # side of the square output, pixels
    grayscale: bool = False  # one channel (luma) instead of RGB
    fit: Fit = "stretch"  # how a non-square image becomes square

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def __post_init__(self) -> None:
        if self.size < 4:
            raise ValueError(f"size must be at least 4 pixels, got {self.size}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {self.fit!r}")


@dataclass(frozen=True)
class Decoded:
    """The outcome of decoding one item; ``error`` is set (and ``pixels`` None) when it failed."""

    pixels: np.ndarray | None  # (size, size, channels) uint8
    width: int = 0  # original width, pixels
    height: int = 0  # original height, pixels
    mode: str = ""  # original Pillow mode (RGB, L, P, CMYK, I;16, ...)
    format: str = ""  # JPEG, PNG, ... or "array"
    content_hash: str = ""  # blake2b of the raw bytes: exact duplicates
    phash: int = 0  # 64-bit perceptual hash: near-duplicates
    error: str | None = None


def decode(payload: Payload, pre: Preprocess) -> Decoded:
    """Decodes one payload; never raises for a bad image (the error is returned instead)."""
    try:
        if isinstance(payload, np.ndarray):
            return _decode_array(payload, pre)
        data = Path(payload).read_bytes() if isinstance(payload, str) else payload
        return _decode_bytes(data, pre)
    except Exception as exc:  # noqa: BLE001 - any failure of a single image is reported, not raised
        return Decoded(pixels=None, error=_describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"refused as a decompression bomb (over {MAX_PIXELS:,} pixels)"
    text = str(exc) or type(exc).__name__
    if "truncated" in text:
        return "truncated file: " + text
    return f"{type(exc).__name__}: {text}"


def _decode_bytes(data: bytes, pre: Preprocess) -> Decoded:
    if not data:
        return Decoded(pixels=None, error="empty file (0 bytes)")
    content_hash = hashlib.blake2b(data, digest_size=16).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
        width, height, mode, fmt = img.width, img.height, img.mode, img.format or ""
        if width * height > MAX_PIXELS:
            raise Image.DecompressionBombError(f"{width}x{height}")
        if fmt == "JPEG":
            img.draft("L" if pre.grayscale else "RGB", _draft_request(width, height, pre))
        img.load()
    img = ImageOps.exif_transpose(img) or img
    pixels, phash = _finish(img, pre)
    return Decoded(pixels, width, height, mode, fmt, content_hash, phash)


def _decode_array(array: np.ndarray, pre: Preprocess) -> Decoded:
    if array.dtype != np.uint8:
        raise ValueError(f"array images must be uint8, got {array.dtype}")
    content_hash = hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()
    img = Image.fromarray(array)
    pixels, phash = _finish(img, pre)
    return Decoded(pixels, img.width, img.height, img.mode, "array", content_hash, phash)


def _draft_request(width: int, height: int, pre: Preprocess) -> tuple[int, int]:
    """The smallest decoded size that still holds the output at full resolution.

    ``draft`` picks the largest DCT scale (1/2, 1/4, 1/8) whose result is at least this big.
    The request is symmetric in width/height, so EXIF rotation applied later does not matter.
    """
    if pre.fit == "stretch":
        return pre.size, pre.size
    short, long = min(width, height), max(width, height)
    scale = pre.size / (short if pre.fit == "center-crop" else long)
    return math.ceil(width * scale), math.ceil(height * scale)


def _to_8bit_mode(img: Image.Image, grayscale: bool) -> Image.Image:
    """Converts any Pillow mode to 'L' or 'RGB' correctly: alpha over white, 16-bit scaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    target = "L" if grayscale else "RGB"
    return img if img.mode == target else img.convert(target)


def _finish(img: Image.Image, pre: Preprocess) -> tuple[np.ndarray, int]:
    img = _to_8bit_mode(img, pre.grayscale)
    box = (pre.size, pre.size)
    method = Image.Resampling.BILINEAR
    if pre.fit == "center-crop":
        img = ImageOps.fit(img, box, method)
    elif pre.fit == "pad":
        img = ImageOps.pad(img, box, method, color=0)
    elif img.size != box:
        img = img.resize(box, method, reducing_gap=3.0)
    # phash resizes to 32x32 grey itself (Lanczos, ~0.4 ms at 150 px); a reduced bilinear copy is
    # several times cheaper and hashes the same way for every image
    small = img.convert("L").resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)
    bits = imagehash.phash(small).hash.flatten()
    phash = int.from_bytes(np.packbits(bits).tobytes(), "big")
    pixels = np.asarray(img, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, phash
