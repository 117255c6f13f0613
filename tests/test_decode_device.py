"""``prepare --decode-device``: the device JPEG path decodes like Pillow's, and without CUDA it falls back with a note."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tellapart._errors import UserError
from tellapart.data import (
    PrepareConfig,
    Preprocess,
    SplitConfig,
    SynthConfig,
    open_source,
    prepare,
    synth_faces,
)
from tellapart.data._decode import (
    LimitedPreprocess,
    _device_jpeg,
    _draft_scale,
    decode,
    decode_device_for,
)


def _photo(size: int = 320) -> bytes:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_decode_device_cpu_needs_no_note() -> None:
    assert decode_device_for("cpu") == ("cpu", None)


def test_decode_device_cuda_falls_back_to_cpu_with_a_note_when_there_is_no_gpu() -> None:
    device, note = decode_device_for("cuda")
    if torch.cuda.is_available():
        assert (device, note) == ("cuda", None)
    else:
        assert device == "cpu" and "no CUDA GPU" in str(note) and "on the CPU instead" in str(note)


def test_a_bad_decode_device_names_the_option() -> None:
    with pytest.raises(UserError, match="--decode-device must be one of cpu, cuda"):
        decode_device_for("tpu")


def test_draft_scale_is_pillows() -> None:
    assert _draft_scale(1024, 1024, (64, 64)) == 8
    assert _draft_scale(1024, 1024, (150, 150)) == 4  # 1024 // 150 = 6: only halve twice
    assert _draft_scale(1024, 1024, (600, 600)) == 1


@pytest.mark.parametrize("grayscale", [False, True])
def test_device_path_on_cpu_decodes_like_pillow_draft(grayscale: bool) -> None:
    data = _photo()
    pre = LimitedPreprocess.of(Preprocess(size=40, grayscale=grayscale), 10**8)
    pillow = decode(data, pre)
    reduced = _device_jpeg(data, Image.open(io.BytesIO(data)), pre, "cpu")  # torchvision's decoder, same reduction
    assert reduced is not None and reduced.size == (40, 40)  # 320 / 8
    assert reduced.mode == ("L" if grayscale else "RGB")
    pillow_reduced = Image.open(io.BytesIO(data))
    pillow_reduced.draft(reduced.mode, (40, 40))
    diff = np.abs(np.asarray(reduced, np.int16) - np.asarray(pillow_reduced.convert(reduced.mode), np.int16))
    assert diff.mean() < 2.0  # DCT scaling vs decode-then-average: rounding-level differences
    assert pillow.pixels is not None and pillow.pixels.shape == (40, 40, 1 if grayscale else 3)


def test_prepare_asked_for_cuda_without_a_gpu_gives_the_cpu_cache_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():  # the fallback is what this machine cannot show; the GPU path then runs instead
        device, _ = decode_device_for("cuda")
        assert device == "cuda"
    synth_faces(tmp_path / "faces", SynthConfig(pairs=12, size=96, seed=3), progress=False)
    source = open_source(tmp_path / "faces", kind="paired")
    split = SplitConfig(test=0.25, val=0.25)
    cpu = prepare(source, tmp_path / "cpu", PrepareConfig(preprocess=Preprocess(size=24), split=split), progress=False)
    capsys.readouterr()
    asked = prepare(
        source, tmp_path / "cuda", PrepareConfig(preprocess=Preprocess(size=24), split=split, decode_device="cuda"),
        progress=True,
    )
    said = capsys.readouterr().err
    if not torch.cuda.is_available():
        assert "note: --decode-device cuda: PyTorch sees no CUDA GPU here; decoding JPEGs on the CPU instead" in said
        assert np.array_equal(np.asarray(cpu.pixels), np.asarray(asked.pixels))
    assert len(asked) == len(cpu) == 24


def test_the_cli_takes_decode_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tellapart.cli import main

    synth_faces(tmp_path / "faces", SynthConfig(pairs=6, size=64, seed=4), progress=False)
    code = main(["data", "prepare", str(tmp_path / "faces"), "--out", str(tmp_path / "cache"), "--size", "16", "--decode-device", "cuda"])
    captured = capsys.readouterr()
    assert code == 0 and str(tmp_path / "cache") in captured.out
    if not torch.cuda.is_available():
        assert "decoding JPEGs on the CPU instead" in captured.err
    assert main(["data", "prepare", str(tmp_path / "faces"), "--out", str(tmp_path / "bad"), "--decode-device", "tpu"]) != 0
    assert "--decode-device must be one of cpu, cuda" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())  # nothing half-written left
