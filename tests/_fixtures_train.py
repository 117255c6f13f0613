"""Tiny datasets, caches and runs shared by the training, evaluation, prediction and export tests.

Test modules import the fixtures they use (``from _fixtures_train import easy_cache``). Each
dataset is built once per session, whichever module asks first: the builders memoise on the
session's temporary folder, so importing a fixture into several modules costs nothing extra.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tellapart.data import Cache, PrepareConfig, Preprocess, open_source, prepare
from tellapart.train import TrainConfig, load_config, train

__all__ = [
    "FAST",
    "TINY_CNN",
    "csv_rows",
    "easy_cache",
    "easy_images",
    "easy_run",
    "fast_config",
    "fresh_copy",
    "write_easy_images",
]

#: Settings every test run uses: CPU, fp32, one thread (the test machine's cores are shared),
#: no mid-epoch checkpoints unless a test asks for them.
FAST = ("device=cpu", "precision=fp32", "threads=1", "batch_size=8", "checkpoint_every_s=0")

#: A small CNN that learns the easy images in two epochs, in milliseconds (flattened, so it sees
#: where the bright half is; a global pool would not).
TINY_CNN = ("model.name=cnn", "model.args.blocks=[{filters: 8, pool: max}, {filters: 8, pool: max}]", "optim.lr=3e-3")

_BUILT: dict[str, Path] = {}


def fast_config(*overrides: str, epochs: int = 2) -> TrainConfig:
    """A TrainConfig with the fast test settings, then ``overrides`` (``key=value`` strings)."""
    return load_config(None, [*FAST, f"epochs={epochs}", *overrides])


def write_easy_images(folder: Path, per_class: int = 20, size: int = 32, seed: int = 0) -> list[Path]:
    """Two linearly separable classes as PNG class folders: the brighter half is left or right."""
    rng = np.random.default_rng(seed)
    paths = []
    for label in ("left", "right"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = np.full((size, size, 3), 80.0)
            half = slice(0, size // 2) if label == "left" else slice(size // 2, size)
            img[:, half] = 175.0
            img += rng.normal(0, 30, img.shape)
            path = folder / label / f"{label}-{k:02d}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
            paths.append(path)
    return paths


def _once(key: str, factory: pytest.TempPathFactory, build: Callable[[Path], Path]) -> Path:
    if key not in _BUILT:
        _BUILT[key] = build(factory.mktemp(key))
    return _BUILT[key]


@pytest.fixture(scope="session")
def easy_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of 40 PNGs (32 px) in class folders ``left``/``right``; treat as read-only."""

    def build(tmp: Path) -> Path:
        write_easy_images(tmp / "images")
        return tmp / "images"

    return _once("easy-images", tmp_path_factory, build)


@pytest.fixture(scope="session")
def easy_cache(easy_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """The easy images prepared at 16 px (train/val/test split by prepare's defaults)."""

    def build(tmp: Path) -> Path:
        cfg = PrepareConfig(preprocess=Preprocess(size=16), workers=1)
        return prepare(open_source(easy_images), tmp / "cache", cfg, progress=False).path

    return Cache(_once("easy-cache", tmp_path_factory, build))


@pytest.fixture(scope="session")
def easy_run(easy_cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run of the tiny CNN on the easy cache; copy it (``fresh_copy``) to modify."""

    def build(tmp: Path) -> Path:
        train(easy_cache, fast_config(*TINY_CNN), tmp / "run", progress=False)
        return tmp / "run"

    return _once("easy-run", tmp_path_factory, build)


def fresh_copy(run: Path, dest: Path) -> Path:
    """A private copy of a shared run folder, for tests that write into it."""
    shutil.copytree(run, dest)
    return dest


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (metrics.csv, leaderboard.csv, predictions)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
