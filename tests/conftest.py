"""Shared fixtures of the data tests: broken files, a decompression bomb, a two-class folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _images import png_bomb, write_class_folders, write_image


@pytest.fixture(scope="session")
def bomb_bytes() -> bytes:
    return png_bomb()


@pytest.fixture
def bad_files(tmp_path: Path, bomb_bytes: bytes) -> Callable[[Path], dict[str, Path]]:
    """Writes one file of each kind of broken image into a folder; returns {kind: path}."""

    def write(folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        good = folder / "_tmp_full.jpg"
        write_image(good, (64, 64), seed=99, quality=90)
        full = good.read_bytes()
        good.unlink()
        files = {
            "empty": folder / "empty.jpg",
            "truncated": folder / "truncated.jpg",
            "text": folder / "notes.jpg",
            "bomb": folder / "bomb.png",
        }
        files["empty"].write_bytes(b"")
        files["truncated"].write_bytes(full[: len(full) // 2])
        files["text"].write_text("this is not an image\n")
        files["bomb"].write_bytes(bomb_bytes)
        return files

    return write


@pytest.fixture
def two_classes(tmp_path: Path) -> Path:
    """``tmp_path/ds`` with classes cat (6) and dog (6), 16x16 PNGs."""
    root = tmp_path / "ds"
    write_class_folders(root, {"cat": 6, "dog": 6})
    return root
