"""The prepared cache: every image decoded once into a memory-mapped uint8 array, plus a manifest.

Layout of a cache folder::

    manifest.json   settings, classes, per-item ids/labels/groups/splits, train mean/std,
                    skipped files, duplicates; written last, so its presence marks completeness
    pixels.u8       raw uint8 array, C order, shape [n, size, size, channels] (see manifest)

A prepare writes into a hidden sibling folder and renames it into place, so an interrupted
prepare never leaves a folder that looks complete. The same source and settings reuse the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tellapart._errors import UserError

from ._batches import RowReader
from ._decode import Decoded, Preprocess
from ._scan import Duplicates, find_duplicates, scan
from ._sources import PairedSource, Source
from ._split import SPLITS, SplitConfig, split_by_group

__all__ = ["Cache", "PrepareConfig", "prepare", "write_subset", "CACHE_FORMAT"]

CACHE_FORMAT = 1  # bump when the on-disk layout changes: old caches then rebuild
MANIFEST = "manifest.json"
PIXELS = "pixels.u8"


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of ``prepare``; all of them (but workers/progress) are part of the cache's identity."""

    preprocess: Preprocess = field(default_factory=Preprocess)
    split: SplitConfig = field(default_factory=SplitConfig)
    strict: bool = False  # fail on the first unreadable file instead of skipping it
    near_threshold: int = 4  # perceptual-hash bits that may differ for two images to count as near duplicates
    workers: int = 0  # decoding processes; 0 = every core

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("workers")
        return d


def _fingerprint(source_fp: str, cfg: PrepareConfig) -> str:
    import hashlib

    blob = json.dumps({"format": CACHE_FORMAT, "source": source_fp, "settings": cfg.identity()}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


class Cache:
    """Read access to a prepared cache. Pixels stay on disk (memory map) until sliced."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            if (self.path / "shards.json").is_file():
                raise UserError(
                    f"{self.path} is a shard set (shards.json), not one cache: train on it under torchrun, "
                    f"or open one part, e.g. {self.path / 'part-000'}"
                )
            raise UserError(
                f"{self.path} is not a prepared cache (no {MANIFEST}); run 'tellapart data prepare SOURCE --out {self.path}'"
            )
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != CACHE_FORMAT:
            raise UserError(f"{self.path} was written by another cache format; prepare it again")

    # -- what the cache holds
    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(**self.manifest["preprocess"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.manifest["class_names"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def mean(self) -> list[float]:
        """Per-channel mean of the train split, pixels scaled to [0, 1]."""
        return list(self.manifest["mean"])

    @property
    def std(self) -> list[float]:
        return list(self.manifest["std"])

    @property
    def ids(self) -> list[str]:
        return list(self.manifest["ids"])

    @cached_property
    def labels(self) -> np.ndarray:
        return np.asarray(self.manifest["labels"], dtype=np.int64)

    @cached_property
    def splits(self) -> np.ndarray:
        return np.asarray(self.manifest["splits"])

    @property
    def groups(self) -> list[str | None]:
        return list(self.manifest["groups"])

    def __len__(self) -> int:
        return int(self.manifest["n"])

    @cached_property
    def pixels(self) -> np.ndarray:
        """(n, size, size, channels) uint8, memory-mapped read-only."""
        pre = self.preprocess
        shape = (len(self), pre.size, pre.size, pre.channels)
        if len(self) == 0:
            return np.zeros(shape, dtype=np.uint8)
        return np.memmap(self.path / PIXELS, dtype=np.uint8, mode="r", shape=shape)

    def reader(self, *, stream: bool) -> np.ndarray | RowReader:
        """The pixels as the memory map (fast, pages stay resident) or streamed by ``pread`` (bounded memory)."""
        if not stream or len(self) == 0:
            return self.pixels
        pre = self.preprocess
        return RowReader(self.path / PIXELS, (len(self), pre.size, pre.size, pre.channels))

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split (train, val or test)."""
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.splits == split)

    def source_path(self, index: int) -> Path | None:
        """The original file of a row, when the source was a folder or a CSV list and it still exists."""
        root = self.manifest["source"].get("files_root")
        if not root:
            return None
        path = Path(root) / self.manifest["ids"][index]
        return path if path.is_file() else None

    def summary(self) -> str:
        m = self.manifest
        pre = self.preprocess
        lines = [
            f"cache {self.path}: {len(self)} images, {pre.size}x{pre.size}x{pre.channels} ({pre.fit}), "
            f"{self.num_classes} classes",
        ]
        for split in SPLITS:
            counts = m["class_counts"].get(split, {})
            lines.append(f"  {split:5s} {sum(counts.values()):7d}  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
        if m["skipped"]:
            lines.append(f"  skipped {len(m['skipped'])} unreadable file(s), e.g. {m['skipped'][0]['id']}: {m['skipped'][0]['error']}")
        dup = m["duplicates"]
        if dup["cross_split_exact"] or dup["cross_split_near"]:
            lines.append(
                f"  WARNING: {len(dup['cross_split_exact'])} exact and {len(dup['cross_split_near'])} near duplicate "
                "pair(s) cross splits (possible train/test leakage); see manifest.json 'duplicates'"
            )
        return "\n".join(lines)


def prepare(source: Source, out: str | Path, cfg: PrepareConfig = PrepareConfig(), *, progress: bool = True, force: bool = False) -> Cache:
    """Decodes ``source`` once into a cache at ``out``; reuses it when nothing changed.

    Raises:
        UserError: on unusable data (fewer than two classes, no readable image, ``strict`` with a
            bad file) with a message naming the file or option to fix.
    """
    out = Path(out)
    fingerprint = _fingerprint(source.fingerprint(), cfg)
    if not force and (out / MANIFEST).is_file():
        try:
            existing = Cache(out)
            if existing.fingerprint == fingerprint:
                _log(progress, f"reusing {out}: same source and settings")
                return existing
        except (UserError, json.JSONDecodeError, KeyError):
            pass
        _log(progress, f"rebuilding {out}: the source or the settings changed")
    if out.exists() and not (out / MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not a tellapart cache; choose another --out or remove it")
    items = source.items()
    _require_classes({i.label for i in items}, source)
    if isinstance(source, PairedSource) and source.unpaired():
        _log(progress, f"note: {len(source.unpaired())} file(s) have no twin in the other folder, e.g. {source.unpaired()[0]}")
    if not cfg.split.by_group and any(i.group for i in items):
        print(
            "WARNING: --no-group-split: items of one group (e.g. a face and its comic twin) may land in different "
            "splits, and test accuracy will then overstate how well the model generalises.",
            file=sys.stderr,
        )

    with _staged(out) as tmp:
        pre = cfg.preprocess
        row_bytes = pre.size * pre.size * pre.channels
        pixels = np.memmap(tmp / PIXELS, dtype=np.uint8, mode="w+", shape=(max(len(items), 1), row_bytes))
        rows: list[int] = []  # item index of each written row, in order
        failures: list[tuple[int, str]] = []

        def write(index: int, d: Decoded) -> None:
            if d.error is not None:
                if cfg.strict:
                    raise UserError(f"{source.path}: cannot read {items[index].id}: {d.error} (drop --strict to skip such files)")
                failures.append((index, d.error))
                return
            assert d.pixels is not None
            pixels[len(rows)] = d.pixels.reshape(-1)
            rows.append(index)

        started = time.perf_counter()
        decoded = scan(source, items, pre, workers=cfg.workers, progress=progress, desc="prepare", on_result=write)
        seconds = time.perf_counter() - started
        if not rows:
            raise UserError(f"{source.path}: none of the {len(items)} images could be read; run 'tellapart data check' for details")
        pixels.flush()
        del pixels
        os.truncate(tmp / PIXELS, len(rows) * row_bytes)  # drop rows reserved for unreadable files

        kept = [items[i] for i in rows]
        class_names = sorted({i.label for i in kept})
        _require_classes(set(class_names), source, after_skipping=True)
        splits, notes = split_by_group([i.label for i in kept], [i.group for i in kept], [i.split for i in kept], cfg.split)
        for note in notes:
            _log(progress, f"note: {note}")
        dups = find_duplicates(
            [decoded[i].content_hash for i in rows], [decoded[i].phash for i in rows], [True] * len(rows),
            threshold=cfg.near_threshold,
        )
        label_index = {name: k for k, name in enumerate(class_names)}
        view = np.memmap(tmp / PIXELS, dtype=np.uint8, mode="r", shape=(len(rows), pre.size, pre.size, pre.channels))
        train_rows = np.flatnonzero(np.asarray(splits) == "train")
        mean, std = _channel_stats(view, train_rows)
        del view
        manifest = {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": {
                "kind": source.kind,
                "path": str(Path(source.path).resolve()),
                "files_root": _files_root(source),
                "fingerprint": source.fingerprint(),
            },
            "settings": cfg.identity(),
            "preprocess": asdict(pre),
            "n": len(rows),
            "class_names": class_names,
            "mean": mean,
            "std": std,
            "ids": [i.id for i in kept],
            "labels": [label_index[i.label] for i in kept],
            "groups": [i.group for i in kept],
            "splits": splits,
            "class_counts": {
                s: dict(sorted(Counter(i.label for i, sp in zip(kept, splits) if sp == s).items())) for s in SPLITS
            },
            "skipped": [{"id": items[i].id, "error": err} for i, err in failures],
            "duplicates": _duplicates_manifest(dups, [i.id for i in kept], splits, [i.group for i in kept]),
            "decode_seconds": round(seconds, 3),
            "notes": notes,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest))
    cache = Cache(out)
    _log(progress, cache.summary())
    return cache


def write_subset(cache: Cache, rows: np.ndarray, out: str | Path, *, fingerprint: str, extra: dict[str, Any] | None = None) -> Cache:
    """A new cache at ``out`` holding ``rows`` of ``cache`` (ascending), in the same format.

    Items keep their ids, labels, groups and splits; the class names, preprocessing and the
    *source's* train mean/std are kept, so every subset normalises exactly as the whole did.
    ``extra`` is merged into the manifest (e.g. which shard this is).
    """
    out = Path(out)
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    pre = cache.preprocess
    with _staged(out) as tmp:
        pixels = np.memmap(tmp / PIXELS, dtype=np.uint8, mode="w+", shape=(max(len(rows), 1), pre.size, pre.size, pre.channels))
        chunk = 2048  # rows per copy: bounded memory for caches larger than RAM
        for start in range(0, len(rows), chunk):
            pixels[start : start + chunk] = cache.pixels[rows[start : start + chunk]]
        pixels.flush()
        del pixels
        os.truncate(tmp / PIXELS, len(rows) * pre.size * pre.size * pre.channels)
        m = cache.manifest
        keep = rows.tolist()
        labels, splits = [m["labels"][i] for i in keep], [m["splits"][i] for i in keep]
        names = cache.class_names
        manifest = {
            **m,
            "fingerprint": fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "n": len(keep),
            "ids": [m["ids"][i] for i in keep],
            "labels": labels,
            "groups": [m["groups"][i] for i in keep],
            "splits": splits,
            "class_counts": {
                s: dict(sorted(Counter(names[k] for k, sp in zip(labels, splits) if sp == s).items())) for s in SPLITS
            },
            **(extra or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest))  # last: its presence marks a complete cache
    return Cache(out)


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A hidden sibling folder to write a cache into: renamed into place when complete, removed on failure."""
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _log(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr)


def _require_classes(labels: set[str], source: Source, after_skipping: bool = False) -> None:
    if len(labels) < 2:
        found = f"only {sorted(labels)}" if labels else "none"
        why = " after skipping unreadable files" if after_skipping else ""
        raise UserError(f"{source.path}: a classifier needs at least two classes; found {found}{why}")


def _files_root(source: Source) -> str | None:
    """Where item ids resolve to original files (for galleries of mistakes), if they do."""
    if source.kind in ("folder", "paired"):
        return str(Path(source.path).resolve())
    if source.kind == "csv":
        return str(Path(source.root).resolve())  # type: ignore[attr-defined]
    return None


def _channel_stats(pixels: np.ndarray, rows: np.ndarray, chunk: int = 2048) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``rows`` in [0, 1] units, exact, from 256-bin histograms.

    Histograms of uint8 values avoid converting every pixel to float (which cost more than
    decoding at 150 px); chunks keep memory bounded.
    """
    channels = pixels.shape[-1]
    if len(rows) == 0:
        return [0.5] * channels, [0.25] * channels
    offsets = (np.arange(channels, dtype=np.uint16) * 256).reshape(1, channels)
    hist = np.zeros(256 * channels, dtype=np.int64)
    for start in range(0, len(rows), chunk):
        block = np.asarray(pixels[rows[start : start + chunk]]).reshape(-1, channels)
        hist += np.bincount((block.astype(np.uint16) + offsets).ravel(), minlength=256 * channels)
    hist = hist.reshape(channels, 256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    count = hist.sum(1)
    mean = hist @ values / count
    std = np.sqrt(np.maximum(hist @ (values * values) / count - mean * mean, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def _duplicates_manifest(dups: Duplicates, ids: Sequence[str], splits: Sequence[str], groups: Sequence[str | None]) -> dict[str, Any]:
    def same_group(a: int, b: int) -> bool:
        return groups[a] is not None and groups[a] == groups[b]

    exact_pairs = [(g[0], b) for g in dups.exact for b in g[1:]]
    near = [(a, b, d) for a, b, d in dups.near if not same_group(a, b)]
    limit = 1000  # listed pairs; the counts are always complete
    return {
        "exact_groups": [[ids[i] for i in g] for g in dups.exact[:limit]],
        "exact_groups_count": len(dups.exact),
        "near_pairs": [{"a": ids[a], "b": ids[b], "distance": d} for a, b, d in near[:limit]],
        "near_pairs_count": len(near),
        "cross_split_exact": [
            {"a": ids[a], "a_split": splits[a], "b": ids[b], "b_split": splits[b]}
            for a, b in exact_pairs
            if splits[a] != splits[b]
        ][:limit],
        "cross_split_near": [
            {"a": ids[a], "a_split": splits[a], "b": ids[b], "b_split": splits[b], "distance": d}
            for a, b, d in near
            if splits[a] != splits[b]
        ][:limit],
    }


def _remove_stale_partials(out: Path) -> None:
    """Leftovers of prepares that were killed: partial new caches, or old ones being swapped out."""
    if out.parent.is_dir():
        for pattern in (f".{out.name}.partial-*", f".{out.name}.old-*"):
            for stale in out.parent.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
