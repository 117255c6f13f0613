"""Decoding: orientation, colour modes, fits, the JPEG draft shortcut, and broken files."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from _images import make_image, write_class_folders
from PIL import Image

from tellapart.data import Preprocess, decode, open_source
from tellapart.data._decode import MAX_PIXELS
from tellapart.data._scan import scan


def _encode(img: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def _ok(payload: bytes | str | np.ndarray, **pre: object) -> np.ndarray:
    d = decode(payload, Preprocess(**pre))  # type: ignore[arg-type]
    assert d.error is None, d.error
    assert d.pixels is not None
    return d.pixels


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize("width", [40, 320], ids=["full-decode", "jpeg-draft"])
def test_exif_orientation_is_applied(width: int) -> None:
    # A landscape photo stored sideways: orientation 6 says "rotate 90 degrees clockwise to view".
    height = width // 2
    stored = np.zeros((height, width, 3), np.uint8)
    stored[: height // 2, : width // 4] = (255, 0, 0)  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif)

    px = _ok(data, size=16, fit="pad").astype(int)
    # Viewed upright it is portrait (8 wide, 16 tall): black bars left and right, not above and below.
    assert px[:, :3].max() < 30 and px[:, -3:].max() < 30
    # The stored top-left corner is now the top-right corner of the picture.
    top_right = px[1, 10]
    assert top_right[0] > 180 and top_right[1] < 80
    assert px[14, 5].max() < 60  # bottom-left stays black
    info = decode(data, Preprocess(size=16))
    assert (info.width, info.height) == (width, height)  # as stored: what check reports


# --------------------------------------------------------------------------- colour modes


def test_palette_with_transparency_is_composited_over_white() -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black (transparent), index 1 red
    img.paste(1, (0, 0, 4, 8))
    px = _ok(_encode(img, "PNG", transparency=0), size=8)
    assert tuple(px[4, 1]) == (255, 0, 0)  # opaque red stays red
    assert tuple(px[4, 6]) == (255, 255, 255)  # transparent black becomes white, not black


def test_rgba_is_composited_over_white() -> None:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.paste((0, 0, 255, 128), (0, 0, 8, 4))
    px = _ok(_encode(img, "PNG"), size=8).astype(int)
    assert tuple(px[6, 4]) == (255, 255, 255)  # fully transparent
    assert px[1, 4, 2] == 255 and 120 <= px[1, 4, 0] <= 135  # half-transparent blue over white


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = _encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red ink
    d = decode(data, Preprocess(size=8))
    assert d.mode == "CMYK"
    r, g, b = d.pixels[4, 4].astype(int)  # type: ignore[index]
    assert r > 200 and g < 50 and b < 50


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    values = np.array([[0, 16384, 32768, 65535]] * 4, dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    d = decode(data, Preprocess(size=4, grayscale=True))
    assert d.mode.startswith("I")
    row = d.pixels[0, :, 0].astype(int)  # type: ignore[index]
    assert abs(row[0]) <= 1 and abs(row[1] - 64) <= 2 and abs(row[2] - 128) <= 2 and row[3] == 255


def test_one_bit_image() -> None:
    img = Image.new("1", (8, 8), 0)
    img.paste(1, (0, 0, 4, 8))
    px = _ok(_encode(img, "PNG"), size=8)
    assert px.shape == (8, 8, 3)
    assert tuple(px[3, 1]) == (255, 255, 255) and tuple(px[3, 6]) == (0, 0, 0)


def test_grayscale_output_has_one_channel() -> None:
    px = _ok(_encode(make_image((20, 12)), "PNG"), size=10, grayscale=True)
    assert px.shape == (10, 10, 1) and px.dtype == np.uint8


def test_array_payload_from_idx_or_cifar() -> None:
    digit = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    d = decode(digit, Preprocess(size=28, grayscale=True))
    assert (d.format, d.mode, d.width, d.height) == ("array", "L", 28, 28)
    assert np.array_equal(d.pixels[:, :, 0], digit)  # type: ignore[index]
    assert decode(digit.astype(np.float32), Preprocess(size=8)).error is not None


# --------------------------------------------------------------------------- fits


@pytest.mark.parametrize("fit", ["stretch", "center-crop", "pad"])
@pytest.mark.parametrize("shape", [(30, 12), (12, 30), (5, 5)])
def test_every_fit_gives_a_square(fit: str, shape: tuple[int, int]) -> None:
    px = _ok(_encode(make_image(shape), "PNG"), size=16, fit=fit)
    assert px.shape == (16, 16, 3)


def test_fits_differ_as_their_names_say() -> None:
    # A wide image: red | green | blue thirds.
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :20, 0] = wide[:, 20:40, 1] = wide[:, 40:, 2] = 255
    data = _encode(Image.fromarray(wide), "PNG")
    crop = _ok(data, size=12, fit="center-crop").astype(int)
    assert crop[:, :, 1].mean() > 200 and crop[:, :, 0].mean() < 30  # only the green middle
    pad = _ok(data, size=12, fit="pad").astype(int)
    assert pad[0].max() == 0 and pad[-1].max() == 0 and pad[6, 0, 0] > 200 and pad[6, -1, 2] > 200
    stretch = _ok(data, size=12, fit="stretch").astype(int)
    assert stretch[0, 0, 0] > 200 and stretch[-1, -1, 2] > 200  # every colour, full height


def test_jpeg_draft_matches_a_full_decode() -> None:
    # Detail about 8 px wide: a draft at too small a scale (1/8 here) would blur it (mean diff ~7).
    detail = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    big = Image.fromarray(detail).resize((512, 384), Image.Resampling.BICUBIC)
    data = _encode(big, "JPEG", quality=92)
    fast = _ok(data, size=64).astype(float)
    full = Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=3.0)
    assert np.abs(fast - np.asarray(full, dtype=float)).mean() < 4.0


# --------------------------------------------------------------------------- broken files


def test_broken_files_are_described(tmp_path: Path, bad_files) -> None:  # type: ignore[no-untyped-def]
    files = bad_files(tmp_path)
    errors = {kind: decode(str(path), Preprocess(size=8)).error for kind, path in files.items()}
    assert errors["empty"] == "empty file (0 bytes)"
    assert "truncated" in str(errors["truncated"])
    assert errors["text"] == "not an image Pillow can read"
    assert "decompression bomb" in str(errors["bomb"]) and f"{MAX_PIXELS:,}" in str(errors["bomb"])
    assert "No such file" in str(decode(str(tmp_path / "missing.png"), Preprocess(size=8)).error)


def test_decompression_bomb_is_refused_fast(bomb_bytes: bytes) -> None:
    started = time.perf_counter()
    d = decode(bomb_bytes, Preprocess(size=8))
    assert d.error is not None and d.pixels is None
    assert time.perf_counter() - started < 1.0  # refused from the header, never decompressed


def test_large_but_legal_image_is_not_called_a_bomb() -> None:
    # 10,000 x 10,000 is over Pillow's own default limit but under MAX_PIXELS.
    data = _encode(Image.new("1", (10_000, 10_000)), "PNG")
    assert decode(data, Preprocess(size=8)).error is None


# --------------------------------------------------------------------------- parallel scan


def test_parallel_scan_matches_serial_and_keeps_order(tmp_path: Path, bad_files) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "ds"
    write_class_folders(root, {"a": 40, "b": 40}, size=(8, 8))  # >= 64 items: the process pool
    bad = bad_files(root / "b")
    source = open_source(root)
    items = source.items()
    pre = Preprocess(size=8)
    seen: list[int] = []
    pooled = scan(source, items, pre, workers=2, progress=False, on_result=lambda i, d: seen.append(i))
    serial = scan(source, items, pre, workers=1, progress=False)
    assert seen == list(range(len(items)))
    assert [(d.content_hash, d.error) for d in pooled] == [(d.content_hash, d.error) for d in serial]
    failed = {items[i].id for i, d in enumerate(pooled) if d.error}
    assert failed == {f"b/{p.name}" for p in bad.values()}
    assert all(d.pixels is None for d in pooled)  # pixels are streamed to on_result, not kept


# --------------------------------------------------------------------------- summaries for prepare


@pytest.mark.parametrize("grayscale", [False, True], ids=["rgb", "grey"])
def test_decoder_summaries_match_the_pixels(grayscale: bool) -> None:
    # prepare asks the workers for each image's thumbnail and channel sums instead of re-reading the cache
    from tellapart.data._decode import LimitedPreprocess
    from tellapart.data._dedup import thumbnail

    photo = make_image((96, 80), seed=3)
    pre = LimitedPreprocess.of(Preprocess(size=40, grayscale=grayscale), MAX_PIXELS, summaries=True)
    for payload in (_encode(photo, "JPEG", quality=90), np.asarray(photo)):
        d = decode(payload, pre)
        assert d.pixels is not None and d.thumb is not None and d.moments is not None
        assert np.array_equal(d.thumb, thumbnail(d.pixels))
        flat = d.pixels.reshape(-1, d.pixels.shape[-1]).astype(np.int64)
        assert np.array_equal(d.moments, np.stack([flat.sum(0), (flat**2).sum(0)]))
    plain = decode(_encode(photo, "PNG"), Preprocess(size=40))
    assert plain.thumb is None and plain.moments is None  # data check and predict do not pay for them
