"""The prepared cache: every image decoded once into a memory-mapped uint8 array, plus a manifest.

Layout of a cache folder::

    manifest.json          settings, classes, per-item ids/labels/groups/splits, train mean/std,
                           skipped files, duplicates, the pixel file's size and checksum
    pixels.u8              raw uint8 array, C order, shape [n, size, size, channels] (see manifest)
    tellapart-cache.json   the marker: this folder is a cache tellapart wrote (format, fingerprint)

A prepare writes into a hidden sibling folder and renames it into place, so an interrupted
prepare never leaves a folder that looks complete. The same source and settings reuse the cache.
A folder is replaced only when its marker says tellapart wrote it and it holds nothing else: a
command never deletes a file it did not write. Opening a cache checks the manifest's keys and the
pixel file's size; ``verify_cache`` (``tellapart data verify``) also checks the pixels' checksum.
"""

from __future__ import annotations

import errno
import hashlib
import io
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

from tellapart._log import say as _say
from tellapart._errors import UserError
from tellapart._files import STORAGE_ERRNOS, storage_error

from ._batches import RowReader
from ._decode import Decoded, LimitedPreprocess, Preprocess, decode_device_for, max_pixels
from ._dedup import THUMB, DuplicateCounts, Native, pair_key
from ._scan import Duplicates, find_duplicates, scan
from ._notes import upscale_note
from ._sources import PairedSource, Source, layout_notes, left_out
from ._split import SPLITS, SplitConfig, split_by_group

__all__ = ["Cache", "Manifest", "PrepareConfig", "prepare", "verify_cache", "write_subset", "CACHE_FORMAT"]

CACHE_FORMAT = 2  # bump when the on-disk layout changes: old caches then rebuild (2: marker, pixel size + checksum)
MANIFEST = "manifest.json"
PIXELS = "pixels.u8"
MARKER = "tellapart-cache.json"
#: Derived data tellapart keeps inside a cache: one sub-folder per backbone's cached features
#: (``tellapart.train``'s feature cache), each holding only ``FEATURE_FILES``.
FEATURES = "features"
FEATURE_META, FEATURE_ARRAY, FEATURE_DONE = "meta.json", "features.f32", "done.u8"  # what each sub-folder holds
FEATURE_FILES = frozenset({FEATURE_META, FEATURE_ARRAY, FEATURE_DONE})
#: Every file a cache folder may hold: the only ones a rebuild removes.
CACHE_FILES = (MANIFEST, PIXELS, MARKER, FEATURES)
#: Manifest keys every reader relies on; a manifest missing one was not written whole by prepare.
REQUIRED_KEYS = (
    "format", "fingerprint", "source", "preprocess", "n", "class_names", "mean", "std", "ids", "labels", "groups",
    "splits", "class_counts", "skipped", "pixels",
)  # fmt: skip


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of ``prepare``; all of them (but workers/progress) are part of the cache's identity."""

    preprocess: Preprocess = field(default_factory=Preprocess)
    split: SplitConfig = field(default_factory=SplitConfig)
    strict: bool = False  # fail on the first unreadable file instead of skipping it
    near_threshold: int = 4  # perceptual-hash bits two images may differ by to be compared on the pixels as near duplicates
    workers: int = 0  # decoding processes; 0 = every core
    max_pixels: int | None = None  # larger images are refused as decompression bombs; None: TELLAPART_MAX_PIXELS or 100M
    decode_device: str = "cpu"  # JPEG decoder: "cpu" (Pillow) or "cuda" (nvJPEG; the CPU, with a note, without a GPU)

    @property
    def pixel_limit(self) -> int:
        return self.max_pixels or max_pixels()

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("workers")
        d["max_pixels"] = self.pixel_limit  # a raised limit admits more images: another cache
        if d["decode_device"] == "cpu":  # GPU-decoded pixels round differently: another cache; CPU ones keep old fingerprints
            d.pop("decode_device")
        return d


def _fingerprint(source_fp: str, cfg: PrepareConfig) -> str:
    import hashlib

    blob = json.dumps({"format": CACHE_FORMAT, "source": source_fp, "settings": cfg.identity()}, sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What a cache's ``manifest.json`` tells the other stages, as one typed value (``Cache.info``)."""

    fingerprint: str  # changes whenever the source or the preparation settings change
    set_fingerprint: str  # for a part of a shard set, the set's fingerprint; else the cache's own
    preprocess: dict[str, Any]  # as recorded (size, channels, fit, ...): checkpoints carry it verbatim
    class_names: tuple[str, ...]
    images: int  # rows in the cache
    skipped: int  # source files left out (unreadable, too large, ...)
    notes: tuple[str, ...]  # what prepare said about the data (layout, upscaling, splits)


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
        self.manifest: dict[str, Any] = _read_manifest(manifest_path)
        self._check_layout()

    def _check_layout(self) -> None:
        """Cheap checks on every open: the manifest is whole, belongs to this folder, and the pixel file has its size."""
        m, again = self.manifest, _prepare_again(self.path)
        if m.get("format") != CACHE_FORMAT:
            raise UserError(f"{self.path} was written by another cache format ({m.get('format')!r}, now {CACHE_FORMAT}); {again}")
        missing = [k for k in REQUIRED_KEYS if k not in m]
        if missing:
            raise UserError(f"{self.path / MANIFEST} is incomplete (missing {', '.join(missing)}); {again}")
        n = m["n"]
        for key in ("ids", "labels", "groups", "splits"):
            if not isinstance(m[key], list) or len(m[key]) != n:
                raise UserError(f"{self.path / MANIFEST}: '{key}' does not list one entry per image (n={n}); {again}")
        marker = _read_marker(self.path)
        if marker is None or marker.get("fingerprint") != m["fingerprint"]:
            raise UserError(
                f"{self.path / MANIFEST} does not belong to this cache folder ({MARKER} is missing or names another "
                f"cache): its labels would not match {PIXELS}; {again}"
            )
        pre = self.preprocess
        expected = n * pre.size * pre.size * pre.channels
        pixel_path = self.path / PIXELS
        actual = pixel_path.stat().st_size if pixel_path.is_file() else None
        recorded = m["pixels"].get("bytes") if isinstance(m["pixels"], dict) else None
        if (n and actual != expected) or recorded != expected:
            found = "missing" if actual is None else f"{actual:,} bytes"
            raise UserError(f"{pixel_path} is {found}, the manifest needs {expected:,} (truncated or replaced); {again}")

    def verify(self) -> str:
        """Checks the pixels' checksum (reads the whole file) and every label and split; returns a one-line verdict.

        Raises:
            UserError: naming the file that does not match and how to rebuild it.
        """
        m, again = self.manifest, _prepare_again(self.path)
        digest = _file_checksum(self.path / PIXELS) if len(self) else _checksum_of([])
        if digest != m["pixels"].get("blake2b"):
            raise UserError(f"{self.path / PIXELS} does not match its checksum in {MANIFEST} (corrupted or replaced); {again}")
        bad_label = next((k for k, v in enumerate(m["labels"]) if not isinstance(v, int) or not 0 <= v < self.num_classes), None)
        if bad_label is not None:
            raise UserError(f"{self.path / MANIFEST}: label of image {bad_label} ({m['ids'][bad_label]}) is not a class index; {again}")
        bad_split = next((k for k, v in enumerate(m["splits"]) if v not in SPLITS), None)
        if bad_split is not None:
            raise UserError(f"{self.path / MANIFEST}: split of image {bad_split} is {m['splits'][bad_split]!r}; {again}")
        return f"{self.path}: ok ({len(self)} images, {m['pixels']['bytes']:,} bytes of pixels match their checksum)"

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

    def thumbnail_png(self, row: int, px: int, *, enlarge_small: bool = False) -> bytes:
        """Row ``row`` as PNG bytes, longest side at most ``px``: from the original file while it
        exists (more detail than the cache), else from the cached pixels.

        ``enlarge_small`` scales cached images smaller than ``px`` up, sharp-edged (8-px digits).
        """
        from PIL import Image

        img = None
        source = self.source_path(row)
        if source is not None:
            try:
                with Image.open(source) as opened:
                    opened.draft("RGB", (px, px))
                    img = opened.convert("RGB")
            except OSError:
                img = None
        if img is None:
            pixels = np.asarray(self.pixels[row])
            img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
            if enlarge_small and max(img.size) < px:
                img = img.resize((px, px), Image.Resampling.NEAREST)
        img.thumbnail((px, px))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    def source_path(self, index: int) -> Path | None:
        """The original file of a row, when the source was a folder or a CSV list and it still exists."""
        root = self.manifest["source"].get("files_root")
        if not root:
            return None
        path = Path(root) / self.manifest["ids"][index]
        return path if path.is_file() else None

    @property
    def features_dir(self) -> Path:
        """Where backbones' cached features of this cache's rows live (removed with the cache on a rebuild)."""
        return self.path / FEATURES

    @property
    def info(self) -> Manifest:
        """The manifest's facts other stages may read, typed (they never index ``manifest`` by key)."""
        m = self.manifest
        return Manifest(
            fingerprint=str(m["fingerprint"]),
            set_fingerprint=str(m.get("shard", {}).get("set_fingerprint", m["fingerprint"])),
            preprocess=dict(m["preprocess"]),
            class_names=tuple(m["class_names"]),
            images=len(self),
            skipped=len(m.get("skipped", [])),
            notes=tuple(m.get("notes", [])),
        )

    @property
    def duplicates(self) -> DuplicateCounts:
        """Exact counts of duplicate pairs by kind and split pair, and the listed examples."""
        return DuplicateCounts.from_manifest(self.manifest.get("duplicates", {}))

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
        if m.get("left_out"):
            lines.append(f"  left out {sum(m['left_out'].values())} file(s) that are not images: "
                         + ", ".join(f"{why} {count}" for why, count in m["left_out"].items()))
        for note, ids in _by_note(m.get("decode_notes", [])).items():
            lines.append(f"  WARNING: {len(ids)} image(s) {note}, e.g. {ids[0]}")
        counts = self.duplicates
        crossing = {kind: counts.crossing(kind) for kind in ("exact", "near")}
        if crossing["exact"] or crossing["near"]:
            spread = ", ".join(
                f"{n} {kind} {key}" for kind, by_pair in sorted(counts.by_split_pair.items()) for key, n in sorted(by_pair.items())
                if n and len(set(key.split("~"))) == 2
            )
            lines.append(
                f"  WARNING: {crossing['exact']} exact and {crossing['near']} near duplicate pair(s) cross splits ({spread}; "
                "possible train/test leakage); see manifest.json 'duplicates'"
            )
        if counts.near_pairs is None:
            lines.append("  near duplicates: not confirmed on the pixels in this cache (an older tellapart wrote it); prepare it again with --force")
        return "\n".join(lines)


def prepare(source: Source, out: str | Path, cfg: PrepareConfig = PrepareConfig(), *, progress: bool = True, force: bool = False) -> Cache:
    """Decodes ``source`` once into a cache at ``out``; reuses it when nothing changed.

    Raises:
        UserError: on unusable data (fewer than two classes, no readable image, ``strict`` with a
            bad file) with a message naming the file or option to fix.
    """
    out = Path(out)
    source_fingerprint = source.fingerprint()  # once: it stats every file
    fingerprint = _fingerprint(source_fingerprint, cfg)
    if _holds_cache(out):  # refuses a folder tellapart did not write (it would be replaced)
        why = "--force"
        if not force:
            try:
                existing = Cache(out)  # checks the manifest's keys and the pixel file's size
                if existing.fingerprint == fingerprint:
                    _say(progress, f"reusing {out}: same source and settings")
                    return existing
                why = "the source or the settings changed"
            except UserError as exc:
                why = str(exc).split("; ")[0]
        _say(progress, f"rebuilding {out}: {why}")
    items = source.items()
    _require_classes({i.label for i in items}, source)
    for note in layout_notes(source):  # e.g. classes read above nested folders: worth knowing before a long decode
        _say(progress, f"note: {note}")
    if isinstance(source, PairedSource) and source.unpaired():
        _say(progress, f"note: {len(source.unpaired())} file(s) have no twin in the other folder, e.g. {source.unpaired()[0]}")
    if not cfg.split.by_group and any(i.group for i in items):
        print(
            "WARNING: --no-group-split: items of one group (e.g. a face and its comic twin) may land in different "
            "splits, and test accuracy will then overstate how well the model generalises.",
            file=sys.stderr,
        )

    pre = cfg.preprocess
    row_bytes = pre.size * pre.size * pre.channels
    try:
        return _prepare_into(source, out, cfg, items, fingerprint, source_fingerprint, progress)
    except OSError as exc:  # a full disk or an I/O error: nothing half-written is left (see _staged)
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, out.parent / out.name, needed=len(items) * row_bytes) from None
        raise


def _prepare_into(
    source: Source, out: Path, cfg: PrepareConfig, items: list[Any], fingerprint: str, source_fingerprint: str, progress: bool
) -> Cache:
    """Decodes ``items`` into a staged folder and swaps it into place at ``out``.

    ``fingerprint`` (the cache's) and ``source_fingerprint`` are both taken before decoding: one snapshot.
    """
    with _staged(out) as tmp:
        pre = cfg.preprocess
        row_bytes = pre.size * pre.size * pre.channels
        pixels = _allocate(tmp / PIXELS, (max(len(items), 1), row_bytes))
        rows: list[int] = []  # item index of each written row, in order
        failures: list[tuple[int, str]] = []
        notes_of_rows: list[dict[str, str]] = []
        checksum = hashlib.blake2b(digest_size=16)  # of the rows as written, in file order
        native = Native.empty(len(items))  # tiny images' own pixels, by row (zero pages: costs nothing for larger images)
        thumbs = np.zeros((len(items), THUMB, THUMB), dtype=np.uint8)  # by row: what duplicates are found from
        moments = np.zeros((len(items), 2, pre.channels), dtype=np.int64)  # by row: the channel sums the statistics need

        def write(index: int, d: Decoded) -> None:
            if d.error is not None:
                if cfg.strict:
                    raise UserError(f"{source.path}: cannot read {items[index].id}: {d.error} (drop --strict to skip such files)")
                failures.append((index, d.error))
                return
            assert d.pixels is not None and d.thumb is not None and d.moments is not None  # the decoder was asked for summaries
            row = np.ascontiguousarray(d.pixels).reshape(-1)
            pixels[len(rows)] = row
            checksum.update(row.data)
            thumbs[len(rows)], moments[len(rows)] = d.thumb, d.moments
            if d.native is not None:
                native.put(len(rows), d.native)
            if getattr(d, "note", None):
                notes_of_rows.append({"id": items[index].id, "note": str(d.note)})
            rows.append(index)

        started = time.perf_counter()
        device, fallback = decode_device_for(cfg.decode_device)
        if fallback:
            _say(progress, f"note: {fallback}")
        # the limit and decoder travel to the decoding workers, which also make thumbnails and channel sums
        decoder = LimitedPreprocess.of(pre, cfg.pixel_limit, device, summaries=True)
        workers = cfg.workers if device == "cpu" else 1  # one process owns the GPU (CUDA cannot be forked)
        decoded = scan(source, items, decoder, workers=workers, progress=progress, desc="prepare", on_result=write)
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
        upscaled = upscale_note(pre.size, int(np.median([min(decoded[i].width, decoded[i].height) for i in rows])))
        for note in [*notes, *([upscaled] if upscaled else [])]:
            _say(progress, note if note.startswith("WARNING") else f"note: {note}")
        notes = [*layout_notes(source), *notes, *([upscaled] if upscaled else [])]  # recorded; the layout's were said before decoding
        label_index = {name: k for k, name in enumerate(class_names)}
        dups = find_duplicates(
            [decoded[i].content_hash for i in rows], thumbs[: len(rows)],
            [True] * len(rows), sides=[min(decoded[i].width, decoded[i].height, pre.size) for i in rows], threshold=cfg.near_threshold,
            native=native,
        )  # confirmed on the cache's own pixels, and tiny images on their own
        train_rows = np.flatnonzero(np.asarray(splits) == "train")
        mean, std = _channel_stats(moments[train_rows], pre.size * pre.size)
        manifest = {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": {
                "kind": source.kind,
                "path": str(Path(source.path).resolve()),
                "files_root": _files_root(source),
                "fingerprint": source_fingerprint,
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
            "left_out": left_out(source),
            "decode_notes": notes_of_rows,
            "pixels": {"bytes": len(rows) * row_bytes, "blake2b": checksum.hexdigest()},
        }
        _write_cache_files(tmp, manifest)
    cache = Cache(out)
    _say(progress, cache.summary())
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
        pixels = _allocate(tmp / PIXELS, (max(len(rows), 1), pre.size, pre.size, pre.channels))
        chunk = 2048  # rows per copy: bounded memory for caches larger than RAM
        checksum = hashlib.blake2b(digest_size=16)
        for start in range(0, len(rows), chunk):
            block = np.ascontiguousarray(cache.pixels[rows[start : start + chunk]])
            pixels[start : start + len(block)] = block
            checksum.update(block.data)
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
            "pixels": {"bytes": len(keep) * pre.size * pre.size * pre.channels, "blake2b": checksum.hexdigest()},
            **(extra or {}),
        }
        _write_cache_files(tmp, manifest)
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


def _channel_stats(moments: np.ndarray, pixels_per_image: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units, exact, from each image's (2, channels) sums of values and squares.

    The decoders sum every image's uint8 values and their squares in int64 (no rounding), so the
    training split's statistics need no second pass over the pixels once the split is known.
    """
    channels = moments.shape[-1]
    if len(moments) == 0:
        return [0.5] * channels, [0.25] * channels
    total = moments.sum(0).astype(np.float64)  # (2, channels), exact below 2**53 (about 10**11 pixels at 255)
    count = float(len(moments) * pixels_per_image)
    mean = total[0] / (255.0 * count)
    std = np.sqrt(np.maximum(total[1] / (255.0 * 255.0 * count) - mean * mean, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def _duplicates_manifest(dups: Duplicates, ids: Sequence[str], splits: Sequence[str], groups: Sequence[str | None]) -> dict[str, Any]:
    """Every count exact (by kind and split pair: ``by_split_pair``); example lists capped at 1000."""

    def same_group(a: int, b: int) -> bool:
        return groups[a] is not None and groups[a] == groups[b]

    exact_pairs = [(g[0], b) for g in dups.exact for b in g[1:]]
    near = [p for p in dups.near if not same_group(p[0], p[1])]
    by_split_pair: dict[str, dict[str, int]] = {"exact": {}, "near": {}}
    for kind, pairs in (("exact", exact_pairs), ("near", [p[:2] for p in near])):
        for a, b in pairs:
            key = pair_key(splits[a], splits[b])
            by_split_pair[kind][key] = by_split_pair[kind].get(key, 0) + 1
    limit = 1000  # listed pairs; the counts are always complete

    def crossing(pairs: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        # pairs touching test first: they are the ones a report shows
        found = [p for p in pairs if splits[p[0]] != splits[p[1]]]
        return sorted(found, key=lambda p: "test" not in (splits[p[0]], splits[p[1]]))[:limit]

    return {
        "exact_groups": [[ids[i] for i in g] for g in dups.exact[:limit]],
        "exact_groups_count": len(dups.exact),
        "near_pairs": [{"a": ids[a], "b": ids[b], "distance": d, "similarity": s} for a, b, d, s in near[:limit]],
        "near_pairs_count": len(near),
        "near_candidates": dups.candidates,
        "by_split_pair": by_split_pair,
        "cross_split_exact": [
            {"a": ids[a], "a_split": splits[a], "b": ids[b], "b_split": splits[b]} for a, b in crossing(exact_pairs)
        ],
        "cross_split_near": [
            {"a": ids[a], "a_split": splits[a], "b": ids[b], "b_split": splits[b], "distance": d, "similarity": s}
            for a, b, d, s in crossing(near)
        ],
    }


def _remove_stale_partials(out: Path) -> None:
    """Leftovers of prepares that were killed: partial new caches, or old ones being swapped out.

    Only the cache's own files are removed (then the folder, if that emptied it).
    """
    if out.parent.is_dir():
        for pattern in (f".{out.name}.partial-*", f".{out.name}.old-*"):
            for stale in out.parent.glob(pattern):
                _remove_cache_files(stale)


def _remove_cache_files(folder: Path) -> None:
    """Removes the files a cache consists of, and the folder when nothing else is in it."""
    if not folder.is_dir() or folder.is_symlink():
        return
    _remove_features(folder / FEATURES)
    for name in CACHE_FILES:
        if name != FEATURES:
            (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:  # something we did not write is inside: leave it
        pass


def _remove_features(features: Path) -> None:
    """Removes the feature caches tellapart wrote (sub-folders of ``FEATURE_FILES`` and their temporary
    files); anything else found in ``features/`` stays, and so does the folder then."""
    if not features.is_dir() or features.is_symlink():
        return
    for sub in features.iterdir():
        names = {p.name for p in sub.iterdir()} if sub.is_dir() and not sub.is_symlink() else None
        ours = names is not None and all(n in FEATURE_FILES or (n.startswith(".") and ".tmp-" in n) for n in names)
        if ours:
            shutil.rmtree(sub)
    try:
        features.rmdir()
    except OSError:  # something we did not write is inside: leave it
        pass


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        _holds_cache(out)  # again, just before replacing: refuses a folder that gained foreign files meanwhile
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        _remove_cache_files(old)
    else:
        os.replace(tmp, out)


def _holds_cache(out: Path) -> bool:
    """Whether ``out`` holds a cache tellapart wrote (False: absent or empty); refuses anything else.

    A cache is a folder whose marker (or, without one, whose manifest's own ``format`` and
    ``fingerprint`` keys) says so and which holds nothing but a cache's files.

    Raises:
        UserError: ``out`` is a file, or a folder holding files tellapart did not write.
    """
    if not out.exists():
        return False
    if not out.is_dir() or out.is_symlink():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    names = {p.name for p in out.iterdir()}
    if not names:
        return False
    foreign = sorted(names - set(CACHE_FILES))
    ours = _read_marker(out) is not None or _has_own_manifest(out)
    if not ours or foreign:
        listed = ", ".join(foreign[:3] or sorted(names)[:3]) + (", ..." if len(foreign or names) > 3 else "")
        raise UserError(
            f"{out} exists and is not a tellapart cache (it holds {listed}, which tellapart did not write); "
            "nothing was changed: choose another --out, or empty the folder yourself"
        )
    return True


def _has_own_manifest(out: Path) -> bool:
    """A cache without a marker (format 1 had none): its manifest carries its own ``format`` and ``fingerprint``."""
    try:
        m = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and isinstance(m.get("format"), int) and isinstance(m.get("fingerprint"), str)


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("written_by") == "tellapart" else None


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({type(exc).__name__}: truncated or edited?); {_prepare_again(path.parent)}") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} does not hold a cache manifest; {_prepare_again(path.parent)}")
    return manifest


def _prepare_again(path: Path) -> str:
    return f"re-run 'tellapart data prepare SOURCE --out {path} --force'"


def _write_cache_files(tmp: Path, manifest: dict[str, Any]) -> None:
    """The manifest and the marker, last: a staged folder is complete once they are there."""
    (tmp / MANIFEST).write_text(json.dumps(manifest))
    marker = {"written_by": "tellapart", "format": CACHE_FORMAT, "fingerprint": manifest["fingerprint"]}
    (tmp / MARKER).write_text(json.dumps(marker))


def _allocate(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A writable memory map of a file whose blocks are reserved first.

    Writing through a memory map into a sparse file on a full disk kills the process (SIGBUS);
    reserving the blocks makes a full disk an ``OSError`` (ENOSPC) here instead.
    """
    nbytes = int(np.prod(shape))
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            f.truncate(nbytes)  # the filesystem cannot reserve blocks: a full disk is then found late
        except AttributeError:  # pragma: no cover - no posix_fallocate on this platform
            f.truncate(nbytes)
    return np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)


def _checksum_of(chunks: Sequence[bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _file_checksum(path: Path, chunk: int = 16 * 2**20) -> str:
    """blake2b (16 bytes) of a file, read in 16 MB chunks (about 1 GB/s)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _by_note(notes: Sequence[dict[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for n in notes:
        grouped.setdefault(n["note"], []).append(n["id"])
    return grouped


def verify_cache(path: str | Path) -> str:
    """Opens the cache at ``path`` and checks its pixels' checksum; returns the verdict line.

    Raises:
        UserError: the cache is incomplete, truncated, mismatched or corrupted (the message names the file).
    """
    return Cache(path).verify()
