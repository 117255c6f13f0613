"""Shard sets: a cache split into parts for machines that share no filesystem.

Layout of a shard set folder::

    shards.json   the parts, the source cache's fingerprint, per-part train counts; written last
    part-000/     a complete cache (same format as any other) with 1/N of the train split,
    part-001/     stratified and disjoint, plus the whole val and test splits
    ...

Every part keeps the source's class names, preprocessing and train mean/std, so every machine
normalises identically. Copy ``shards.json`` and the part(s) a machine reads to that machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tellapart._errors import UserError

from ._cache import CACHE_FORMAT, Cache, write_subset

__all__ = ["PartShare", "ShardSet", "assign_part", "is_shard_set", "shard_cache", "split_train_rows"]

SHARDS = "shards.json"


def part_name(index: int) -> str:
    return f"part-{index:03d}"


def is_shard_set(path: str | Path) -> bool:
    return (Path(path) / SHARDS).is_file()


def split_train_rows(rows: np.ndarray, labels: np.ndarray, parts: int, seed: int = 0) -> list[np.ndarray]:
    """``rows`` dealt into ``parts`` disjoint, stratified sets (sorted).

    Each class's rows are shuffled and dealt round-robin, continuing the count from the previous
    class, so per class and in total the parts differ by at most one row.
    """
    rng = np.random.default_rng([seed, 104729])
    dealt = np.concatenate([rng.permutation(rows[labels[rows] == c]) for c in np.unique(labels[rows])]) if len(rows) else rows
    return [np.sort(dealt[k::parts]) for k in range(parts)]


def _set_fingerprint(source_fingerprint: str, parts: int, seed: int) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "source": source_fingerprint, "parts": parts, "seed": seed}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def shard_cache(cache: Cache | str | Path, parts: int, out: str | Path, *, seed: int = 0, progress: bool = True) -> list[Path]:
    """Writes ``out/part-000`` ... ``out/part-(N-1)`` and ``out/shards.json``; returns the part folders.

    Args:
        cache: the source cache (or its folder).
        parts: how many parts (machines); each needs at least one train image of every class.
        out: a new or empty folder.
        seed: the shuffle that deals train rows to parts.
    """
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    out = Path(out)
    train = cache.indices("train")
    smallest = min(np.bincount(cache.labels[train], minlength=cache.num_classes)) if len(train) else 0
    if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= smallest:
        raise UserError(
            f"--parts {parts!r}: choose 1 to {smallest} (every part needs a train image of every class; "
            f"the smallest class in {cache.path} has {smallest} train images)"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; choose a new --out (or remove it)")
    out.mkdir(parents=True, exist_ok=True)
    held_out = np.flatnonzero(cache.splits != "train")  # val and test: whole in every part
    set_fp = _set_fingerprint(cache.fingerprint, parts, seed)
    shares = split_train_rows(train, cache.labels, parts, seed)
    paths = []
    for k, rows in enumerate(shares):
        extra = {"shard": {"part": k, "parts": parts, "set_fingerprint": set_fp, "source_fingerprint": cache.fingerprint}}
        fingerprint = hashlib.blake2b(f"{set_fp}/{k}".encode(), digest_size=16).hexdigest()
        part = write_subset(cache, np.concatenate([rows, held_out]), out / part_name(k), fingerprint=fingerprint, extra=extra)
        paths.append(part.path)
        if progress:
            print(f"{part.path}: {len(rows)} train, {len(held_out)} val+test images", file=sys.stderr)
    index = {
        "format": CACHE_FORMAT,
        "fingerprint": set_fp,
        "parts": [part_name(k) for k in range(parts)],
        "source": {"path": str(cache.path.resolve()), "fingerprint": cache.fingerprint},
        "seed": seed,
        "class_names": cache.class_names,
        "train_counts": [int(len(r)) for r in shares],
        "train_class_counts": [np.bincount(cache.labels[r], minlength=cache.num_classes).tolist() for r in shares],
        "val_count": int(len(cache.indices("val"))),
        "test_count": int(len(cache.indices("test"))),
    }
    (out / SHARDS).write_text(json.dumps(index, indent=2))  # last: its presence marks a complete set
    return paths


@dataclass(frozen=True)
class PartShare:
    """Which part of a shard set one process reads, and its share of that part's train rows."""

    path: Path  # the shard set folder
    fingerprint: str  # the set's: what a run trained on, checked on resume
    part: int
    parts: int
    reader: int  # this process among the processes reading the part
    readers: int  # processes reading the part (they split its rows as DistributedSampler does)
    epoch_rows: int = 0  # every part's epoch is wrapped to this length (the largest part's), so all take the same steps

    def epoch_order(self, rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
        """This part's rows for one epoch: shuffled by (seed, epoch, part) and wrapped to ``epoch_rows``."""
        order = np.random.default_rng([seed, epoch, self.part]).permutation(np.asarray(rows))
        return np.resize(order, max(self.epoch_rows, len(order)))  # np.resize repeats from the start: wrap-around padding


def assign_part(parts: int, *, rank: int, world: int, local_rank: int, node: int, nodes: int) -> tuple[int, int, int]:
    """``(part, reader, readers)`` for one process of a torchrun job.

    One part per process when the part count equals the world size (rank r reads part r);
    otherwise one part per machine: node g reads part ``g % parts`` and the processes of the
    machines sharing a part split its rows.
    """
    if parts == world:
        return rank, 0, 1
    per_node = world // max(nodes, 1)
    if nodes % parts or per_node * nodes != world:
        raise UserError(
            f"a shard set of {parts} parts cannot be split evenly over {world} process(es) on {nodes} machine(s); "
            f"start {parts} processes (one per part) or {parts} machines (torchrun --nnodes {parts}), "
            f"or shard the cache again with --parts {world}"
        )
    return node % parts, (node // parts) * per_node + local_rank, world // parts


class ShardSet:
    """A shard set folder written by ``shard_cache``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not is_shard_set(self.path):
            raise UserError(f"{self.path} is not a shard set (no {SHARDS}); write one with 'tellapart data shard CACHE --parts N --out DIR'")
        self.manifest: dict[str, Any] = json.loads((self.path / SHARDS).read_text())
        if self.manifest.get("format") != CACHE_FORMAT:
            raise UserError(f"{self.path} was written by another cache format; shard the source cache again")

    @property
    def parts(self) -> int:
        return len(self.manifest["parts"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def source(self) -> str:
        return str(self.manifest["source"]["path"])

    def part(self, index: int) -> Cache:
        """One part, checked to belong to this set; a missing part says which machine needs it."""
        folder = self.path / self.manifest["parts"][index]
        if not folder.is_dir():
            raise UserError(
                f"{folder} is not on this machine; copy it (and {SHARDS}) here, or start torchrun so that this "
                f"machine's node rank matches the part it holds (--node-rank with --rdzv-backend static)"
            )
        cache = Cache(folder)
        if cache.info.set_fingerprint != self.fingerprint:
            raise UserError(f"{folder} belongs to another shard set than {self.path / SHARDS}; copy both from the same 'data shard' run")
        return cache

    def first_present(self) -> Cache:
        """Any part on this machine: each holds the whole val and test splits."""
        for index, name in enumerate(self.manifest["parts"]):
            if (self.path / name).is_dir():
                return self.part(index)
        raise UserError(f"{self.path} holds none of its parts; copy one here, or use the source cache {self.source}")

    def share(self, *, rank: int, world: int, local_rank: int, node: int, nodes: int) -> tuple[Cache, PartShare]:
        """The part this process trains on, and how it reads it."""
        if world == 1 and self.parts > 1:
            raise UserError(
                f"{self.path} is a shard set of {self.parts} parts, for {self.parts} processes or machines under torchrun; "
                f"in one process train on its source cache {self.source} (the same train rows, no copies)"
            )
        part, reader, readers = assign_part(self.parts, rank=rank, world=world, local_rank=local_rank, node=node, nodes=nodes)
        return self.part(part), PartShare(self.path, self.fingerprint, part, self.parts, reader, readers)
