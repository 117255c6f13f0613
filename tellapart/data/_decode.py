"""Decode one image (file, bytes or array) into fixed-size uint8 pixels, plus what `check` needs.

Every image is decoded exactly once per cache. JPEGs are decoded at reduced size with Pillow's
``draft`` (DCT scaling) when the target is much smaller than the file, which is most of the
cost of turning 1024x1024 photos into 64-150 px training images.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np
from PIL import Image, ImageOps

from ._dedup import NATIVE_MAX, thumbnail

__all__ = [
    "DECODE_DEVICES", "Decoded", "Fit", "Payload", "Preprocess", "Refused", "decode", "decode_device_for", "max_pixels",
    "MAX_PIXELS", "MAX_PIXELS_ENV",
]

Fit = Literal["stretch", "center-crop", "pad"]
FITS: tuple[str, ...] = ("stretch", "center-crop", "pad")


@dataclass(frozen=True)
class Refused:
    """A payload a source would not hand over (e.g. an archive member over the size cap): decoding reports ``reason``."""

    reason: str


#: What a source hands the decoder: a file path (the decoder reads it), encoded bytes, pixels, or a refusal.
Payload = Union[str, bytes, np.ndarray, Refused]

#: Images with more pixels than this are refused as decompression bombs (10k x 10k). Decoding
#: costs about 4-6 bytes per pixel in each worker (RGBA plus a converted copy), so this bounds a
#: worker at about 0.5 GB; raise it with ``TELLAPART_MAX_PIXELS`` or ``prepare --max-pixels``.
MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "TELLAPART_MAX_PIXELS"


def max_pixels() -> int:
    """The pixel limit in force: ``TELLAPART_MAX_PIXELS`` when set (a positive integer), else ``MAX_PIXELS``."""
    text = os.environ.get(MAX_PIXELS_ENV, "").replace("_", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else MAX_PIXELS


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
    content_hash: str = ""  # of the raw bytes (sha256, 128 bits): exact duplicates (near ones are found from thumbnails, in one batch)
    error: str | None = None
    note: str | None = None  # decoded, but the user should know (e.g. blank after compositing alpha)
    native: np.ndarray | None = None  # (h, w) grey uint8 at the image's own size, when both sides are at most NATIVE_MAX
    thumb: np.ndarray | None = None  # (THUMB, THUMB) grey uint8 of ``pixels``, when the decoder was asked for summaries
    moments: np.ndarray | None = None  # (2, channels) int64: per channel, the sum of ``pixels`` and of their squares (summaries)


@dataclass(frozen=True)
class LimitedPreprocess(Preprocess):
    """``Preprocess`` plus the decoder's settings, as handed to decoding workers (never stored)."""

    max_pixels: int = MAX_PIXELS  # images with more pixels are refused as decompression bombs
    decode_device: str = "cpu"  # where JPEGs are decoded: "cpu" (Pillow) or a torch device (nvJPEG on "cuda")
    summaries: bool = False  # also the thumbnail and channel moments, computed in the decoding workers (prepare)

    @classmethod
    def of(cls, pre: Preprocess, max_pixels: int, decode_device: str = "cpu", *, summaries: bool = False) -> LimitedPreprocess:
        return cls(
            size=pre.size, grayscale=pre.grayscale, fit=pre.fit, max_pixels=max_pixels, decode_device=decode_device, summaries=summaries,
        )


#: ``prepare --decode-device`` choices: Pillow on the CPU, or nvJPEG on a CUDA GPU.
DECODE_DEVICES: tuple[str, ...] = ("cpu", "cuda")


def decode_device_for(asked: str) -> tuple[str, str | None]:
    """The JPEG decoder ``prepare`` will use for ``--decode-device asked``, and a note when it differs.

    "cuda" needs a GPU PyTorch can see; without one, decoding falls back to the CPU (the cache is
    the same but for tiny rounding differences) rather than failing a long preparation.

    Raises:
        UserError: ``asked`` is not a decode device.
    """
    from tellapart._errors import UserError

    if asked not in DECODE_DEVICES and not asked.startswith("cuda:"):
        raise UserError(f"--decode-device must be one of {', '.join(DECODE_DEVICES)} (or cuda:N); got {asked!r}")
    if asked == "cpu":
        return "cpu", None
    import torch

    if not torch.cuda.is_available():
        return "cpu", f"--decode-device {asked}: PyTorch sees no CUDA GPU here; decoding JPEGs on the CPU instead"
    return asked, None


#: What ``_to_8bit_mode`` says of an image whose content lived only in its alpha channel.
BLANK_AFTER_ALPHA = "blank after compositing its transparency over white (white or light content on a transparent background?)"


def decode(payload: Payload, pre: Preprocess) -> Decoded:
    """Decodes one payload; never raises for a bad image (the error is returned instead)."""
    limit = getattr(pre, "max_pixels", None) or max_pixels()
    try:
        if isinstance(payload, Refused):
            return Decoded(pixels=None, error=payload.reason)
        if isinstance(payload, np.ndarray):
            return _decode_array(payload, pre)
        data = Path(payload).read_bytes() if isinstance(payload, str) else payload
        return _decode_bytes(data, pre, limit)
    except Exception as exc:  # noqa: BLE001 - any failure of a single image is reported, not raised
        return Decoded(pixels=None, error=_describe(exc, limit))


def _describe(exc: BaseException, limit: int) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"refused as a decompression bomb (over {limit:,} pixels; raise the limit with --max-pixels or {MAX_PIXELS_ENV})"
    text = str(exc) or type(exc).__name__
    if "truncated" in text:
        return "truncated file: " + text
    return f"{type(exc).__name__}: {text}"


def _decode_bytes(data: bytes, pre: Preprocess, limit: int) -> Decoded:
    if not data:
        return Decoded(pixels=None, error="empty file (0 bytes)")
    content_hash = hashlib.sha256(data).hexdigest()[:32]  # sha256: about 3x blake2b's speed here (SHA extensions)
    # Pillow warns above MAX_IMAGE_PIXELS (a refusal here) and fails above twice it: set to our
    # limit, both refuse exactly above it. Process-wide, but decode is Pillow's only user here.
    Image.MAX_IMAGE_PIXELS = limit
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
        width, height, mode, fmt = img.width, img.height, img.mode, img.format or ""
        if width * height > limit:
            raise Image.DecompressionBombError(f"{width}x{height}")
        device = getattr(pre, "decode_device", "cpu")
        reduced = _device_jpeg(data, img, pre, device) if fmt == "JPEG" and device != "cpu" else None
        if reduced is not None:
            img = reduced
        elif fmt == "JPEG":
            img.draft("L" if pre.grayscale else "RGB", _draft_request(width, height, pre))
        img.load()
    img = ImageOps.exif_transpose(img) or img
    pixels, note, native = _finish(img, pre)
    return Decoded(pixels, width, height, mode, fmt, content_hash, note=note, native=native, **_summaries(pixels, pre))


def _decode_array(array: np.ndarray, pre: Preprocess) -> Decoded:
    if array.dtype != np.uint8:
        raise ValueError(f"array images must be uint8, got {array.dtype}")
    content_hash = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:32]
    img = Image.fromarray(array)
    pixels, note, native = _finish(img, pre)
    return Decoded(pixels, img.width, img.height, img.mode, "array", content_hash, note=note, native=native, **_summaries(pixels, pre))


def _summaries(pixels: np.ndarray, pre: Preprocess) -> dict[str, np.ndarray]:
    """What ``prepare`` reads of every image besides its pixels, computed here so the decoding workers share it.

    The thumbnail is :func:`_dedup.thumbnail`'s (the same numbers as a batch of them); the moments
    give the training split's exact channel mean and std once the split is known.
    """
    if not getattr(pre, "summaries", False):
        return {}
    channels = pixels.shape[-1]
    hist = np.asarray(Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).histogram(), dtype=np.int64).reshape(channels, 256)
    return {"thumb": thumbnail(pixels), "moments": np.stack([hist @ _LEVELS, hist @ _SQUARES])}  # Pillow's C histogram


_LEVELS = np.arange(256, dtype=np.int64)
_SQUARES = _LEVELS * _LEVELS


def _draft_scale(width: int, height: int, request: tuple[int, int]) -> int:
    """The DCT reduction (1, 2, 4 or 8) Pillow's ``draft`` picks for ``request``: the largest that keeps it."""
    scale = min(width // max(request[0], 1), height // max(request[1], 1))
    return next(s for s in (8, 4, 2, 1) if scale >= s)


def _device_jpeg(data: bytes, original: Image.Image, pre: Preprocess, device: str) -> Image.Image | None:
    """Decodes a JPEG with torchvision (nvJPEG on CUDA), reduced on the device as ``draft`` would.

    Returns a Pillow image at the reduced size, carrying the original's EXIF so orientation is
    applied as on the CPU path; or None when the device decoder refuses the file (CMYK, progressive
    on some nvJPEG versions), which then takes the Pillow path.
    """
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        mode = ImageReadMode.GRAY if pre.grayscale else ImageReadMode.RGB
        pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode, device=device)
    except RuntimeError:
        return None
    height, width = pixels.shape[-2:]
    scale = _draft_scale(width, height, _draft_request(width, height, pre))
    if scale > 1:  # area average over scale x scale blocks: what DCT scaling approximates
        size = (math.ceil(height / scale), math.ceil(width / scale))
        pixels = F.interpolate(pixels[None].float(), size=size, mode="area")[0].round_().clamp_(0, 255).to(torch.uint8)
    array = pixels.permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(array[:, :, 0] if pre.grayscale else array, "L" if pre.grayscale else "RGB")
    if "exif" in original.info:
        img.info["exif"] = original.info["exif"]
    return img


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


def _to_8bit_mode(img: Image.Image, grayscale: bool) -> tuple[Image.Image, str | None]:
    """Converts any Pillow mode to 'L' or 'RGB' correctly: alpha over white, 16-bit scaled by bit depth.

    Returns the image and a note when the result hides what the original showed (content only in
    the alpha channel becomes blank over white).
    """
    note = None
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit modes scale by their bit depth, so a dark 16-bit scan stays dark; 32-bit "I" and
        # "F" carry no depth, so values above 255 are taken as 16-bit and others as 8-bit.
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
        if _nearly_uniform(img.convert("L")) and not _nearly_uniform(rgba.getchannel("A")):
            note = BLANK_AFTER_ALPHA
    target = "L" if grayscale else "RGB"
    return (img if img.mode == target else img.convert(target)), note


def _nearly_uniform(channel: Image.Image, spread: int = 8) -> bool:
    """Whether a one-channel image's values all lie within ``spread`` levels (a blank picture)."""
    low, high = channel.getextrema()
    return int(high) - int(low) <= spread


def _finish(img: Image.Image, pre: Preprocess) -> tuple[np.ndarray, str | None, np.ndarray | None]:
    img, note = _to_8bit_mode(img, pre.grayscale)
    small = img.width <= NATIVE_MAX and img.height <= NATIVE_MAX  # kept unresampled: tiny copies are confirmed on these
    native = np.asarray(img.convert("L"), dtype=np.uint8) if small else None
    box = (pre.size, pre.size)
    method = Image.Resampling.BILINEAR
    if pre.fit == "center-crop":
        img = ImageOps.fit(img, box, method)
    elif pre.fit == "pad":
        img = ImageOps.pad(img, box, method, color=0)
    elif img.size != box:
        img = img.resize(box, method, reducing_gap=3.0)
    pixels = np.asarray(img, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, note, native
