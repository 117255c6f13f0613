"""Frozen-backbone features, computed once per cache row and reused by every epoch and run.

A frozen backbone maps each cache row to the same feature vector every epoch, so training the
head needs the backbone only once. Features live beside the pixels they came from::

    CACHE/features/<key>/
        meta.json      what the key hashes (model, digest of the frozen weights, preprocessing,
                       precision, cache fingerprint) and the array's shape
        features.f32   float32 (n, D), C order: row i is ``forward_features`` of cache row i
        done.u8        uint8 (n,): 1 where the row is computed (replaced atomically)

The folder is created in a hidden sibling and renamed into place, as the data cache is; rows are
computed on demand (a run on a train-fraction subset computes only its rows) and marked done
only after they are flushed to disk, so a killed extraction leaves no wrong rows behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tellapart._errors import UserError
from tellapart._files import atomic_write_bytes
from tellapart.data import FEATURE_ARRAY, FEATURE_DONE, FEATURE_META, Cache
from tellapart.models import BACKBONES, Classifier

from ._builders import build_model_for, feeder_for, runtime_for
from ._config import ModelConfig, TrainConfig
from ._loop import Feeder

__all__ = ["FEATURES_FORMAT", "FeatureFeeder", "HeadOnly", "backbone_features", "cached_features", "feature_key", "feature_side"]

FEATURES_FORMAT = 1  # bump when the layout or the key's contents change
_META, _FEATURES, _DONE = FEATURE_META, FEATURE_ARRAY, FEATURE_DONE  # the data stage owns the cache layout
_MIN_FEATURE_SIDE = 64  # px: backbone_features resizes smaller caches up to this inside the model
_MARK_EVERY_S = 30.0  # flush and mark rows done at least this often, seconds (a killed run keeps them)


@dataclass(frozen=True)
class FeatureFeeder(Feeder):
    """A Feeder whose ``pixels`` are feature rows (n, D) float32: batches go to the device as they are."""

    def tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.runtime.device)


class HeadOnly(nn.Module):
    """``model``'s head over precomputed features: what a frozen-backbone epoch trains.

    It holds the model itself, so the head it trains is the model's own.
    """

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(features)


def _state_digest(module: nn.Module) -> str:
    """blake2b of every tensor in ``module``'s state dict: the identity of frozen weights, however obtained."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def feature_key(model: Classifier, feeder: Feeder, cache: Cache) -> tuple[str, dict[str, Any]]:
    """The key of ``model.forward_features`` over ``cache`` as ``feeder`` feeds it, and what it hashes."""
    try:
        timm_version: str | None = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        timm_version = None
    runtime = feeder.runtime
    identity = {
        "format": FEATURES_FORMAT,
        "model": model.model_name,
        "in_chans": model.model_args.get("in_chans"),
        "input_size": model.model_args.get("input_size"),
        # The architecture as built (resize_to, interpolation included), not the head options.
        "architecture": hashlib.blake2b(repr(model.features).encode(), digest_size=16).hexdigest(),
        "weights": _state_digest(model.features),
        "mean": [round(float(v), 8) for v in feeder.mean],
        "std": [round(float(v), 8) for v in feeder.std],
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "device": runtime.device.type,
        "cache": cache.fingerprint,
        "torch": torch.__version__,
        "timm": timm_version,
    }
    key = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=12).hexdigest()
    return key, identity


def cached_features(
    model: Classifier,
    feeder: Feeder,
    cache: Cache,
    rows: np.ndarray,
    *,
    batch_size: int = 256,
    progress: bool = True,
    unwritable: str = "train through the backbone with --set fine_tune.cache_features=false",
) -> np.ndarray:
    """``model.forward_features`` of cache ``rows`` (eval mode), computed once and kept in ``CACHE/features``.

    ``unwritable`` is the way out the error names when the cache folder cannot be written.

    Returns:
        The (n, D) float32 memory map of every cache row; ``rows`` are filled, others may be zeros.

    Raises:
        UserError: The cache folder cannot be written (set ``fine_tune.cache_features=off``).
    """
    key, identity = feature_key(model, feeder, cache)
    folder = cache.features_dir / key
    n, dim = len(cache), int(model.num_features)
    try:
        if not (folder / _META).is_file():
            _create(folder, {**identity, "key": key, "rows": n, "dim": dim, "dtype": "float32"}, n, dim)
        done = np.fromfile(folder / _DONE, dtype=np.uint8)
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        missing = rows[done[rows] == 0]
        if len(missing):
            started = time.perf_counter()
            _compute(model, feeder, folder, missing, n, dim, batch_size=batch_size, progress=progress)
            seconds = time.perf_counter() - started
            if progress:
                print(
                    f"features: {len(missing)} rows of {dim} computed in {seconds:.1f}s "
                    f"({len(missing) / max(seconds, 1e-9):.0f} img/s) into {folder}",
                    file=sys.stderr,
                )
        elif progress:
            print(f"features: {len(rows)} rows reused from {folder}", file=sys.stderr)
    except PermissionError as exc:
        raise UserError(
            f"cannot write backbone features into {cache.features_dir} ({exc.strerror}); {unwritable}"
        ) from None
    return np.memmap(folder / _FEATURES, dtype=np.float32, mode="r", shape=(n, dim))


def backbone_features(
    cache: Cache, backbone: str, rows: np.ndarray, *, resize_to: int | None = None, progress: bool = True
) -> np.ndarray:
    """A pretrained backbone's features of cache ``rows`` (frozen, eval mode), kept in ``CACHE/features``.

    The same rows and key as a frozen-backbone training run of ``backbone`` on this cache (with the
    same ``resize_to``) computes, so whichever runs first computes them for both.

    Args:
        backbone: a name in ``tellapart.models.BACKBONES``; its weights must be installed.
        resize_to: the side (px) images are resized to inside the model (default: the cache's size,
            at least 64 px: an ImageNet backbone sees a 28 px image as a single cell; :func:`feature_side`).

    Returns:
        The (rows in the cache, D) float32 memory map; ``rows`` are filled.

    Raises:
        UserError: an unknown backbone, weights that are not installed, or a cache folder that cannot be written.
    """
    if backbone not in BACKBONES:
        raise UserError(f"--features {backbone!r} is not a pretrained backbone; choose one of {', '.join(sorted(BACKBONES))}")
    side = feature_side(cache, resize_to)
    args: dict[str, Any] = {"weights": "imagenet", **({"resize_to": side} if side != cache.preprocess.size else {})}
    cfg = TrainConfig(model=ModelConfig(name=backbone, args=args))
    model, _ = build_model_for(cache, cfg)
    runtime = runtime_for(model, cfg)
    model = model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    return cached_features(
        model, feeder_for(model, cache, cfg, runtime), cache, rows, progress=progress,
        unwritable="make the cache folder writable, or prepare a copy of the data you own with 'tellapart data prepare'",
    )


def feature_side(cache: Cache, resize_to: int | None = None) -> int:
    """The side (px) :func:`backbone_features` shows ``cache``'s images to the backbone at."""
    return resize_to or max(cache.preprocess.size, _MIN_FEATURE_SIDE)


def _create(folder: Path, meta: dict[str, Any], n: int, dim: int) -> None:
    """Makes ``folder`` with zeroed (sparse) arrays, atomically: another process may race us."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / _FEATURES, "wb") as f:
        f.truncate(n * dim * 4)
    np.zeros(n, dtype=np.uint8).tofile(tmp / _DONE)
    (tmp / _META).write_text(json.dumps(meta, indent=2))
    try:
        os.rename(tmp, folder)
    except OSError:  # the other process won: use its folder
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / _META).is_file():
            raise


def _mark_done(folder: Path, rows: np.ndarray) -> None:
    # Read-modify-replace: a concurrent writer's marks may be lost, never wrong (its rows recompute).
    done = np.fromfile(folder / _DONE, dtype=np.uint8)
    done[rows] = 1
    atomic_write_bytes(folder / _DONE, done.tobytes())


@torch.no_grad()
def _compute(
    model: Classifier,
    feeder: Feeder,
    folder: Path,
    rows: np.ndarray,
    n: int,
    dim: int,
    *,
    batch_size: int,
    progress: bool,
) -> None:
    was_training = model.training
    model.eval()
    out = np.memmap(folder / _FEATURES, dtype=np.float32, mode="r+", shape=(n, dim))
    pending: list[np.ndarray] = []
    last_mark = time.perf_counter()
    bar = tqdm(total=len(rows), desc="features", unit="img", disable=not progress, leave=False)
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]  # sorted: a forward sweep over the pixel memory map
            x = feeder.tensor(feeder.pixels[batch])
            with feeder.runtime.autocast():
                features = model.forward_features(x)
            out[batch] = features.float().cpu().numpy()
            pending.append(batch)
            bar.update(len(batch))
            if time.perf_counter() - last_mark > _MARK_EVERY_S:
                out.flush()
                _mark_done(folder, np.concatenate(pending))
                pending, last_mark = [], time.perf_counter()
        out.flush()
        if pending:
            _mark_done(folder, np.concatenate(pending))
    except KeyboardInterrupt:  # an interrupted run keeps the rows it finished: each is written whole before it is listed
        if pending:
            out.flush()
            _mark_done(folder, np.concatenate(pending))
        raise
    finally:
        bar.close()
        del out
        model.train(was_training)
