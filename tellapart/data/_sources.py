"""Sources: small adapters that list labelled images and hand over their raw payloads.

Every source yields :class:`Item` records (a stable id, a class label, an optional group and
an optional split of its own) and, for a sequence of its items, their payloads in the same
order: a file path, encoded bytes, or a uint8 array. Decoding happens elsewhere, once.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

import numpy as np

from tellapart._errors import UserError

from ._decode import Payload, Refused

__all__ = [
    "Item",
    "Source",
    "FolderSource",
    "CsvSource",
    "ArchiveSource",
    "PairedSource",
    "IdxSource",
    "CifarSource",
    "open_source",
    "left_out",
    "layout_notes",
    "nested_class_notes",
    "max_member_bytes",
    "IMAGE_EXTENSIONS",
    "MAX_MEMBER_BYTES",
    "MAX_MEMBER_ENV",
    "FASHION_MNIST_CLASSES",
    "fingerprint_digest",
    "idx_files",
    "is_image_name",
    "read_idx",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
#: Top-level folder names understood as a source's own splits.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
#: Archive members larger than this (bytes, uncompressed) are not read into memory: a member is
#: held whole while it is identified and decoded. Raise with ``TELLAPART_MAX_MEMBER_MB``.
MAX_MEMBER_BYTES = 256 * 2**20
MAX_MEMBER_ENV = "TELLAPART_MAX_MEMBER_MB"
DEFAULT_PAIR_DIRS = ("face", "comics")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    """One labelled image of a source."""

    id: str  # stable within the source: a relative path, an archive member, or "train/123"
    label: str  # class name
    group: str | None = None  # items sharing a group never straddle splits (e.g. a face and its comic)
    split: str | None = None  # the source's own split: "train", "val" or "test"


class Source(Protocol):
    """The interface every adapter implements."""

    kind: str
    path: Path

    def items(self) -> list[Item]:
        """All items, in a stable order."""
        ...

    def payloads(self, items: Sequence[Item]) -> Iterator[Payload]:
        """The payload of each item, in the order given (a subsequence of ``items()``)."""
        ...

    def fingerprint(self) -> str:
        """Changes whenever a file of the source changes (name, size or modification time)."""
        ...


# --------------------------------------------------------------------------- helpers


def is_image_name(name: str) -> bool:
    """True for a file name read as an image: an image extension, not hidden, not a system file."""
    return _name_problem(name) is None


def _name_problem(name: str) -> str | None:
    """Why a file name is left out of a dataset (hidden, no extension, not an image's), or None."""
    path = PurePosixPath(name)
    if path.name.startswith("."):
        return "hidden file"
    if not path.suffix or path.suffix == ".":
        return "no file extension"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image extension"
    return None


def left_out(source: object) -> dict[str, int]:
    """Files a source saw but left out, counted by reason (hidden, no extension, ...); {} for sources that list no files."""
    counter = getattr(source, "left_out", None)
    return dict(sorted(counter().items())) if callable(counter) else {}


def max_member_bytes() -> int:
    """The archive member cap in force: ``TELLAPART_MAX_MEMBER_MB`` (megabytes) when set, else ``MAX_MEMBER_BYTES``."""
    text = os.environ.get(MAX_MEMBER_ENV, "").strip()
    return int(float(text) * 2**20) if text.replace(".", "", 1).isdigit() and float(text) > 0 else MAX_MEMBER_BYTES


def _too_large(size: int, cap: int) -> Refused:
    return Refused(f"archive member of {size / 2**20:,.0f} MB is over the {cap / 2**20:,.0f} MB cap; raise it with {MAX_MEMBER_ENV}")


def _read_capped(f: IO[bytes], declared: int, cap: int) -> bytes | Refused:
    """A member's bytes, or a refusal when its declared or actual size is over ``cap`` (a lying header is caught too)."""
    if declared > cap:
        return _too_large(declared, cap)
    data = f.read(cap + 1)
    return _too_large(len(data), cap) if len(data) > cap else data


def fingerprint_digest(parts: Sequence[str]) -> str:
    """A short hex digest of ``parts``: sources and subsets fingerprint themselves with it, so caches compare."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _stat_fingerprint(root: Path, relpaths: Sequence[str]) -> str:
    parts = []
    for rel in relpaths:
        try:
            st = (root / rel).stat()
        except OSError:  # a dangling symlink: unreadable when decoded, and part of the identity as such
            parts.append(f"{rel}|missing")
            continue
        parts.append(f"{rel}|{st.st_size}|{st.st_mtime_ns}")
    return fingerprint_digest(parts)


def load_class_map(path: str | Path) -> dict[str, str]:
    """Reads a folder-name -> class-name mapping (JSON object, or lines ``key name`` / ``key,name``).

    Imagenette's ``n01440764 tench`` lines and a ``{"n01440764": "tench"}`` JSON file both work.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"class map file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"class map {p} is not valid JSON: {exc}") from None
        if not isinstance(mapping, dict):
            raise UserError(f"class map {p} must be a JSON object of folder name -> class name")
        return {str(k): str(v) for k, v in mapping.items()}
    mapping = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sep = "," if "," in line else ("\t" if "\t" in line else None)
        parts = [s.strip() for s in (line.split(sep, 1) if sep else line.split(None, 1))]
        if len(parts) != 2 or not all(parts):
            raise UserError(f"{p}:{lineno}: expected 'folder_name class_name', got {line!r}")
        mapping[parts[0]] = parts[1]
    return mapping


def items_from_layout(relpaths: Sequence[str], class_map: dict[str, str] | None, where: str) -> list[Item]:
    """Items of a class-folder layout given relative posix paths of image files.

    Understands ``class/file`` and ``split/class/file`` (split in train/val/test and aliases);
    deeper files belong to the class folder above them.
    """
    if not relpaths:
        raise UserError(f"no image files found in {where}; expected one sub-folder per class")
    tops = {PurePosixPath(p).parts[0].lower() for p in relpaths}
    split_layout = tops <= set(SPLIT_ALIASES) and all(len(PurePosixPath(p).parts) >= 3 for p in relpaths)
    items = []
    for rel in relpaths:
        parts = PurePosixPath(rel).parts
        split = SPLIT_ALIASES[parts[0].lower()] if split_layout else None
        class_parts = parts[1:] if split_layout else parts
        if len(class_parts) < 2:
            raise UserError(
                f"{where}: image {rel!r} is not inside a class folder; put each class's images "
                "in a sub-folder named after the class"
            )
        folder = class_parts[0]
        label = class_map.get(folder, folder) if class_map else folder
        items.append(Item(id=rel, label=label, split=split))
    return items


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class FolderSource:
    """A folder with one sub-folder per class, optionally under ``train/``, ``val/``, ``test/``.

    Classes are the first level of folders (below a split folder); images in deeper folders
    belong to the class folder above them, and :meth:`layout_notes` says so, since a parent of
    several datasets (``root/mnist/train/3/x.png``) would otherwise train on dataset names.

    Symbolic links, to folders and to image files alike, are followed when their target lies
    inside the dataset folder (a class folder that links to another folder of the dataset
    counts its images under the link's name), and refused with the link and its target named
    when it lies outside: a dataset is what its folder holds, so copying it copies everything.
    A link that leads back into a folder it sits in (a loop) is left out and counted as such.
    """

    path: Path
    class_map: dict[str, str] | None = None
    kind: str = "folder"

    @classmethod
    def open(cls, path: str | Path, class_map: dict[str, str] | None = None) -> FolderSource:
        root = Path(path)
        if not root.is_dir():
            raise UserError(f"dataset folder not found: {root}")
        return cls(root, class_map)

    def _relpaths(self) -> list[str]:
        return self._walk()[0]

    def left_out(self) -> Counter[str]:
        """Files and folders under the root that are not images of the dataset, by reason."""
        return self._walk()[1]

    def layout_notes(self) -> list[str]:
        """Notes on how the folder layout was read (e.g. classes taken above nested folders)."""
        return nested_class_notes(self._relpaths(), self.path)

    def _walk(self) -> tuple[list[str], Counter[str]]:
        """Image files (relative posix paths, each folder's files before its sub-folders, sorted) and what was left out."""
        root_real = self.path.resolve()
        found: list[str] = []
        skipped: Counter[str] = Counter()

        def visit(folder: Path, chain: frozenset[Path]) -> None:
            files, folders = [], []
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                try:
                    is_dir = entry.is_dir()  # follows a link
                except OSError:  # a link to itself, or in a loop of links
                    skipped["symlink loop"] += 1
                    continue
                (folders if is_dir else files).append(entry)
            for entry in files:
                problem = _name_problem(entry.name)
                if problem is not None:
                    skipped[problem] += 1
                    continue
                full = Path(entry.path)
                try:
                    target = full.resolve()
                except (OSError, RuntimeError):  # a symlink loop
                    skipped["symlink loop"] += 1
                    continue
                if not target.is_relative_to(root_real):
                    raise UserError(
                        f"{full} is a link to {target}, outside the dataset folder {self.path}; "
                        "copy the file in (links are followed only inside the dataset folder)"
                    )
                found.append(full.relative_to(self.path).as_posix())
            for entry in folders:
                if entry.name.startswith("."):
                    skipped["hidden folder"] += 1
                    continue
                real = Path(entry.path).resolve()
                if entry.is_symlink():
                    if not real.is_relative_to(root_real):
                        raise UserError(
                            f"{entry.path} is a link to {real}, outside the dataset folder {self.path}; copy that folder in, "
                            "or point at a folder that holds both (links are followed only inside the dataset folder)"
                        )
                    if real in chain:  # leads back to a folder being read: following it would never end
                        skipped["symlink loop"] += 1
                        continue
                visit(Path(entry.path), chain | {real})

        visit(self.path, frozenset({root_real}))
        return found, +skipped

    def items(self) -> list[Item]:
        items = items_from_layout(self._relpaths(), self.class_map, str(self.path))
        _require_nonempty_classes(self.path, items)
        return items

    def payloads(self, items: Sequence[Item]) -> Iterator[Payload]:
        for item in items:
            yield str(self.path / item.id)

    def fingerprint(self) -> str:
        return fingerprint_digest([_stat_fingerprint(self.path, self._relpaths()), json.dumps(self.class_map, sort_keys=True)])


def nested_class_notes(relpaths: Sequence[str], root: Path | str) -> list[str]:
    """A note when class folders hold sub-folders of images: the classes are the first level only.

    A parent of several datasets (``root/mnist/train/3/x.png``) reads as one dataset whose
    classes are the dataset names; the note names an example and the folder to point at instead.
    """
    if not relpaths:
        return []
    tops = {PurePosixPath(p).parts[0].lower() for p in relpaths}
    split_layout = tops <= set(SPLIT_ALIASES) and all(len(PurePosixPath(p).parts) >= 3 for p in relpaths)
    depth = 3 if split_layout else 2  # split/class/file or class/file
    nested = [p for p in relpaths if len(PurePosixPath(p).parts) > depth]
    if not nested:
        return []
    example = PurePosixPath(nested[0])
    class_folder = PurePosixPath(*example.parts[: depth - 1])
    classes = sorted({PurePosixPath(*PurePosixPath(p).parts[: depth - 1]).as_posix() for p in nested})
    shown = ", ".join(classes[:5]) + (f" and {len(classes) - 5} more" if len(classes) > 5 else "")
    return [
        f"{len(nested)} image(s) lie in sub-folders of class folders, e.g. {example.as_posix()}: classes are taken from the "
        f"first level ({shown}), so {example.as_posix()} counts as class {example.parts[depth - 2]!r}; point at "
        f"{Path(root) / class_folder} instead if each of these folders is a dataset of its own"
    ]


def layout_notes(source: object) -> list[str]:
    """Notes on how a source's layout was read; [] for sources without any."""
    notes = getattr(source, "layout_notes", None)
    return list(notes()) if callable(notes) else []


def _require_nonempty_classes(root: Path, items: Sequence[Item]) -> None:
    """An empty class folder is almost always a mistake: say which one."""
    if not root.is_dir():
        return
    present = {PurePosixPath(i.id).parts[-2] for i in items}
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if child.name.lower() not in SPLIT_ALIASES:
            subdirs = [child]
        else:  # hidden folders (.ipynb_checkpoints) are not classes
            subdirs = [d for d in child.iterdir() if d.is_dir() and not d.name.startswith(".")]
        for d in subdirs:
            has_files = any(is_image_name(f.name) for f in d.rglob("*") if f.is_file())
            if not has_files and d.name not in present:
                raise UserError(f"class folder {d} holds no images; add images or remove the folder")


# --------------------------------------------------------------------------- CSV lists


@dataclass(frozen=True)
class CsvSource:
    """A CSV/TSV list of ``path,label[,group][,split]``; paths are relative to ``root``."""

    path: Path
    root: Path
    rows: tuple[Item, ...]
    kind: str = "csv"

    @classmethod
    def open(cls, path: str | Path, root: str | Path | None = None) -> CsvSource:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"CSV list not found: {p}")
        base = Path(root) if root is not None else p.parent
        rows = parse_csv_list(p.read_text(encoding="utf-8-sig"), str(p), tsv=p.suffix.lower() == ".tsv")
        root_real = base.resolve()
        for item in rows:
            try:
                full = (base / item.id).resolve()
            except (OSError, RuntimeError):  # a symlink loop: reported as unreadable when decoded
                continue
            if not full.is_relative_to(root_real):
                raise UserError(f"{p}: path {item.id!r} lies outside the dataset root {base}; use paths inside it")
        return cls(p, base, tuple(rows))

    def items(self) -> list[Item]:
        return list(self.rows)

    def payloads(self, items: Sequence[Item]) -> Iterator[Payload]:
        for item in items:
            yield str(self.root / item.id)

    def fingerprint(self) -> str:
        ids = sorted({i.id for i in self.rows})
        existing = [i for i in ids if (self.root / i).is_file()]
        st = self.path.stat()
        return fingerprint_digest([f"{st.st_size}|{st.st_mtime_ns}", _stat_fingerprint(self.root, existing), str(len(ids))])


def parse_csv_list(text: str, where: str, *, tsv: bool = False) -> list[Item]:
    """Parses ``path,label[,group][,split]`` rows; a header naming the columns is optional."""
    delimiter = "\t" if tsv or ("\t" in text.split("\n", 1)[0]) else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"{where} is empty; expected rows of path,label[,group][,split]")
    columns = ["path", "label", "group", "split"]
    header = [c.strip().lower() for c in rows[0]]
    first_line = 1
    if "path" in header and "label" in header:
        unknown = [c for c in header if c not in columns]
        if unknown:
            raise UserError(f"{where}: unknown column(s) {unknown}; allowed: {', '.join(columns)}")
        columns, rows, first_line = header, rows[1:], 2
    items = []
    first_label: dict[str, tuple[str, int]] = {}  # path -> (label, line) of its first row
    for lineno, row in enumerate(rows, first_line):
        if len(row) < 2 or len(row) > len(columns):
            raise UserError(f"{where}:{lineno}: expected {len(columns)} or fewer columns (path,label,...), got {row}")
        rec = dict(zip(columns, (c.strip() for c in row)))
        split = rec.get("split") or None
        if split is not None:
            if split.lower() not in SPLIT_ALIASES:
                raise UserError(f"{where}:{lineno}: unknown split {split!r}; use train, val or test")
            split = SPLIT_ALIASES[split.lower()]
        if not rec.get("path") or not rec.get("label"):
            raise UserError(f"{where}:{lineno}: path and label must not be empty")
        label, line = first_label.setdefault(rec["path"], (rec["label"], lineno))
        if label != rec["label"]:
            raise UserError(
                f"{where}:{lineno}: {rec['path']!r} is labelled {rec['label']!r} here but {label!r} on line {line}; "
                "give each file one label"
            )
        items.append(Item(id=rec["path"], label=rec["label"], group=rec.get("group") or None, split=split))
    return items


# --------------------------------------------------------------------------- archives


@dataclass(frozen=True)
class ArchiveSource:
    """A ``.zip`` or ``.tar(.gz|.bz2|.xz)`` of a class-folder layout or of a CSV list, read in place.

    Tar members are streamed in archive order, so a compressed tar is read once, front to back.
    """

    path: Path
    class_map: dict[str, str] | None = None
    kind: str = "archive"

    @classmethod
    def open(cls, path: str | Path, class_map: dict[str, str] | None = None) -> ArchiveSource:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"archive not found: {p}")
        if not (zipfile.is_zipfile(p) or tarfile.is_tarfile(p)):
            raise UserError(f"{p} is neither a zip nor a tar archive")
        return cls(p, class_map)

    @property
    def is_zip(self) -> bool:
        return zipfile.is_zipfile(self.path)

    def _members(self) -> dict[str, str]:
        """Normalised member name -> name as stored, in archive order.

        ``tar -C folder -czf x.tgz .`` stores ``./cat/1.jpg``; ids use ``cat/1.jpg``.
        """
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                raw = [i.filename for i in zf.infolist() if not i.is_dir()]
        else:
            with tarfile.open(self.path) as tf:
                raw = [m.name for m in tf if m.isfile()]
        return {_normalise_member(n): n for n in raw}

    def _names(self) -> list[str]:
        return list(self._members())

    def _read(self, name: str) -> bytes:
        raw, cap = self._members()[name], max_member_bytes()
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf, zf.open(raw) as f:
                data = _read_capped(f, zf.getinfo(raw).file_size, cap)
        else:
            with tarfile.open(self.path) as tf:
                member = tf.getmember(raw)
                f = tf.extractfile(member)
                assert f is not None
                data = _read_capped(f, member.size, cap)
        if isinstance(data, Refused):
            raise UserError(f"{self.path}!{name}: {data.reason}")
        return data

    def left_out(self) -> Counter[str]:
        """Members that are not images of the dataset, by reason (a CSV list names its own files)."""
        names = [n for n in self._names() if not n.startswith("__MACOSX/")]
        if any(PurePosixPath(n).suffix.lower() in (".csv", ".tsv") for n in names):
            return Counter()
        return +Counter(_name_problem(n) for n in names if _name_problem(n) is not None)

    def _layout(self) -> tuple[str, list[Item]]:
        """(prefix, items): the prefix is stripped from member names to form item ids."""
        names = [n for n in self._names() if not n.startswith("__MACOSX/")]
        for n in names:
            if n.startswith("/") or ".." in PurePosixPath(n).parts:
                raise UserError(f"{self.path}: member {n!r} points outside the archive; refusing to read it")
        lists = [n for n in names if PurePosixPath(n).suffix.lower() in (".csv", ".tsv")]
        if lists:
            listing = min(lists, key=lambda n: len(PurePosixPath(n).parts))
            prefix = str(PurePosixPath(listing).parent)
            prefix = "" if prefix == "." else prefix + "/"
            text = self._read(listing).decode("utf-8-sig")
            items = parse_csv_list(text, f"{self.path}!{listing}", tsv=listing.lower().endswith(".tsv"))
            order = {n: k for k, n in enumerate(names)}
            for item in items:
                if _normalise_member(prefix + item.id) not in order:
                    raise UserError(f"{self.path}!{listing}: {item.id!r} is not in the archive")
            return prefix, sorted(items, key=lambda i: order[_normalise_member(prefix + i.id)])
        images = [n for n in names if is_image_name(n)]
        prefix = _common_folder(images)
        rel = [n[len(prefix):] for n in images]
        return prefix, items_from_layout(rel, self.class_map, str(self.path))

    def items(self) -> list[Item]:
        return self._layout()[1]

    def payloads(self, items: Sequence[Item]) -> Iterator[Payload]:
        prefix = self._layout()[0]
        wanted = [_normalise_member(prefix + i.id) for i in items]
        cap = max_member_bytes()
        if self.is_zip:
            members = self._members()
            with zipfile.ZipFile(self.path) as zf:
                for name in wanted:
                    with zf.open(members[name]) as f:
                        yield _read_capped(f, zf.getinfo(members[name]).file_size, cap)
            return
        position = 0
        with tarfile.open(self.path, mode="r|*") as tf:  # stream: one pass even when compressed
            for member in tf:
                if position < len(wanted) and _normalise_member(member.name) == wanted[position]:
                    f = tf.extractfile(member)
                    assert f is not None
                    data = _read_capped(f, member.size, cap)
                    while position < len(wanted) and wanted[position] == _normalise_member(member.name):
                        yield data  # a list may name one member twice: its copies are adjacent
                        position += 1
        if position != len(wanted):
            raise UserError(f"{self.path}: member {wanted[position]!r} missing or out of archive order")

    def fingerprint(self) -> str:
        st = self.path.stat()
        return fingerprint_digest([self.path.name, str(st.st_size), str(st.st_mtime_ns), json.dumps(self.class_map, sort_keys=True)])


def _normalise_member(name: str) -> str:
    """``./a//b.jpg`` -> ``a/b.jpg``; ``..`` parts are kept (and refused by the caller)."""
    return PurePosixPath(name).as_posix()


def _common_folder(names: Sequence[str]) -> str:
    """A single top-level folder all members share (``dataset/``), stripped from ids.

    Stripped only while every name keeps at least ``class/file`` below it.
    """
    prefix = ""
    while True:
        tops = {PurePosixPath(n[len(prefix):]).parts[0] for n in names if len(PurePosixPath(n[len(prefix):]).parts) > 1}
        deep = all(len(PurePosixPath(n[len(prefix):]).parts) > 2 for n in names)
        if len(tops) != 1 or not deep:
            return prefix
        top = tops.pop()
        if top.lower() in SPLIT_ALIASES:
            return prefix
        prefix += top + "/"


# --------------------------------------------------------------------------- paired layout


@dataclass(frozen=True)
class PairedSource:
    """Kaggle "comic faces paired": two folders whose files pair by stem; the pair is the group.

    The folders may sit a few levels down (the Kaggle archive nests them twice).
    """

    path: Path
    root: Path
    a_dir: str = "face"
    b_dir: str = "comics"
    kind: str = "paired"

    @classmethod
    def open(cls, path: str | Path, a_dir: str = "face", b_dir: str = "comics") -> PairedSource:
        p = Path(path)
        if not p.is_dir():
            raise UserError(f"dataset folder not found: {p}")
        root = find_paired_root(p, a_dir, b_dir)
        if root is None:
            raise UserError(
                f"{p} holds no '{a_dir}/' and '{b_dir}/' folders side by side; "
                "name the folders with --pair-dirs A,B"
            )
        return cls(p, root, a_dir, b_dir)

    def items(self) -> list[Item]:
        items = []
        stems: dict[str, set[str]] = {}
        for folder in (self.a_dir, self.b_dir):
            files = sorted(f for f in (self.root / folder).iterdir() if f.is_file() and is_image_name(f.name))
            if not files:
                raise UserError(f"class folder {self.root / folder} holds no images")
            for f in files:
                stems.setdefault(f.stem, set()).add(folder)
                rel = f.relative_to(self.path).as_posix()
                items.append(Item(id=rel, label=folder, group=f.stem))
        return items

    def left_out(self) -> Counter[str]:
        """Files in the two pair folders that are not images, by reason."""
        names = [f.name for d in (self.a_dir, self.b_dir) for f in (self.root / d).iterdir() if f.is_file()]
        return +Counter(_name_problem(n) for n in names if _name_problem(n) is not None)

    def unpaired(self) -> list[str]:
        """Stems present in only one of the two folders."""
        a = {f.stem for f in (self.root / self.a_dir).iterdir() if is_image_name(f.name)}
        b = {f.stem for f in (self.root / self.b_dir).iterdir() if is_image_name(f.name)}
        return sorted(a ^ b)

    def payloads(self, items: Sequence[Item]) -> Iterator[Payload]:
        for item in items:
            yield str(self.path / item.id)

    def fingerprint(self) -> str:
        return _stat_fingerprint(self.path, [i.id for i in self.items()])


def find_paired_root(path: Path, a_dir: str, b_dir: str, depth: int = 3) -> Path | None:
    """The first folder at most ``depth`` levels below ``path`` holding both pair folders."""
    if (path / a_dir).is_dir() and (path / b_dir).is_dir():
        return path
    if depth == 0:
        return None
    for child in sorted(c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")):
        found = find_paired_root(child, a_dir, b_dir, depth - 1)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- arrays: IDX and CIFAR


class _ArraySource:
    """Shared part of sources whose images are arrays in memory (IDX, CIFAR)."""

    path: Path
    kind: str

    def _arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # split -> (images, labels)
        raise NotImplementedError

    def _class_names(self) -> list[str]:
        raise NotImplementedError

    def items(self) -> list[Item]:
        names = self._class_names()
        items = []
        for split, (_, labels) in self._arrays().items():
            for k, label in enumerate(labels.tolist()):
                if not 0 <= label < len(names):
                    raise UserError(f"{self.path}: label {label} of {split} image {k} has no class name")
                items.append(Item(id=f"{split}/{k}", label=names[label], split=split))
        return items

    def payloads(self, items: Sequence[Item]) -> Iterator[Payload]:
        arrays = self._arrays()
        for item in items:
            split, k = item.id.split("/")
            yield arrays[split][0][int(k)]


@dataclass(frozen=True, eq=False)
class IdxSource(_ArraySource):
    """MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` and friends) in one folder."""

    path: Path
    class_names: tuple[str, ...] | None = None
    kind: str = "idx"

    @classmethod
    def open(cls, path: str | Path, class_names: Sequence[str] | None = None) -> IdxSource:
        p = Path(path)
        if not idx_files(p):
            raise UserError(f"{p} holds no IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz])")
        return cls(p, tuple(class_names) if class_names else None)

    def _arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        key, fp = f"idx:{self.path}", self.fingerprint()
        if _ARRAY_CACHE.get(key, ("", {}))[0] != fp:
            _ARRAY_CACHE[key] = (fp, _load_idx(self.path))
        return _ARRAY_CACHE[key][1]

    def _class_names(self) -> list[str]:
        if self.class_names:
            return list(self.class_names)
        if "fashion" in str(self.path).lower():
            return list(FASHION_MNIST_CLASSES)
        top = max(int(labels.max()) for _, labels in self._arrays().values())
        return [str(k) for k in range(top + 1)]

    def fingerprint(self) -> str:
        files = sorted(idx_files(self.path).values())
        return fingerprint_digest([_stat_fingerprint(self.path, [f.name for f in files]), str(self.class_names)])


_IDX_MARKERS = (
    ("images", "-images-idx3-ubyte"),
    ("images", "-images.idx3-ubyte"),  # Kaggle's spelling
    ("labels", "-labels-idx1-ubyte"),
    ("labels", "-labels.idx1-ubyte"),
)


def idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """{(prefix, "images"|"labels"): path} for IDX files found in ``folder``."""
    found: dict[tuple[str, str], Path] = {}
    if not folder.is_dir():
        return found
    for f in folder.iterdir():
        if not f.is_file():  # Kaggle's MNIST has folders named like the files beside them
            continue
        name = f.name.lower()
        for kind, marker in _IDX_MARKERS:
            if marker in name:
                found[(name.split(marker)[0], kind)] = f
    return found


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (gzip or not) into a numpy array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(raw) - offset != expected:
        raise UserError(f"{path} is truncated: header says {expected} bytes of data, file has {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


_IDX_SPLITS = {"train": "train", "t10k": "test", "test": "test", "val": "val"}
#: path -> (fingerprint, arrays): one entry per source, replaced when its files change
_ARRAY_CACHE: dict[str, tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}


def _load_idx(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    files = idx_files(folder)
    arrays = {}
    for (prefix, kind), f in sorted(files.items()):
        if kind != "images":
            continue
        if (prefix, "labels") not in files:
            raise UserError(f"{f} has no matching labels file ({prefix}-labels-idx1-ubyte[.gz])")
        images, labels = read_idx(f), read_idx(files[(prefix, "labels")])
        if len(images) != len(labels):
            raise UserError(f"{f}: {len(images)} images but {len(labels)} labels")
        arrays[_IDX_SPLITS.get(prefix, prefix)] = (images, labels.astype(np.int64))
    return dict(sorted(arrays.items(), key=lambda kv: kv[0] != "train"))  # train first, as for CIFAR


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches without running arbitrary code: only numpy arrays are allowed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5 (Python 3's default)
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
    }

    def find_class(self, module: str, name: str):  # type: ignore[no-untyped-def]
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _load_batch(raw: bytes, where: str) -> dict[str, object]:
    try:
        batch = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{where} is not a readable CIFAR python batch: {exc}") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


@dataclass(frozen=True, eq=False)
class CifarSource(_ArraySource):
    """CIFAR-10/100 python batches: a ``cifar-10-batches-py`` folder, or the downloaded ``.tar.gz``."""

    path: Path
    kind: str = "cifar"

    @classmethod
    def open(cls, path: str | Path) -> CifarSource:
        p = Path(path)
        if not _cifar_members(p):
            raise UserError(f"{p} holds no CIFAR python batches (data_batch_1..5 and test_batch, or train and test)")
        return cls(p)

    def _arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        key, fp = f"cifar:{self.path}", self.fingerprint()
        if _ARRAY_CACHE.get(key, ("", {}))[0] != fp:
            members = _cifar_members(self.path)
            by_split: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
            for name, raw in sorted(members.items()):  # data_batch_1..5 in order, whatever the folder order
                if name.startswith("data_batch") or name in ("train", "test", "test_batch"):
                    batch = _load_batch(raw, f"{self.path}:{name}")
                    data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                    labels = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
                    split = "test" if name.startswith("test") else "train"
                    by_split.setdefault(split, []).append((np.ascontiguousarray(data), labels))
            _ARRAY_CACHE[key] = (fp, {
                s: (np.concatenate([d for d, _ in parts]), np.concatenate([lab for _, lab in parts]))
                for s, parts in sorted(by_split.items(), key=lambda kv: kv[0] != "train")
            })
        return _ARRAY_CACHE[key][1]

    def _class_names(self) -> list[str]:
        members = _cifar_members(self.path)
        for meta_name, key in (("batches.meta", "label_names"), ("meta", "fine_label_names")):
            if meta_name in members:
                meta = _load_batch(members[meta_name], f"{self.path}:{meta_name}")
                return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]  # type: ignore[attr-defined]
        top = max(int(lab.max()) for _, lab in self._arrays().values())
        return [str(k) for k in range(top + 1)]

    def fingerprint(self) -> str:
        if self.path.is_file():
            st = self.path.stat()
            return fingerprint_digest([str(st.st_size), str(st.st_mtime_ns)])
        names = sorted(f.name for f in self.path.iterdir() if f.is_file())
        return _stat_fingerprint(self.path, names)


_CIFAR_NAMES = {f"data_batch_{k}" for k in range(1, 6)} | {"test_batch", "batches.meta", "train", "test", "meta"}


def _cifar_members(path: Path) -> dict[str, bytes]:
    """Batch name -> raw bytes, from a folder (or its ``cifar-*-batches-py`` child) or a tar archive."""
    if path.is_file() and tarfile.is_tarfile(path):
        out = {}
        with tarfile.open(path) as tf:
            for m in tf:
                base = PurePosixPath(m.name).name
                if m.isfile() and base in _CIFAR_NAMES:
                    f = tf.extractfile(m)
                    assert f is not None
                    out[base] = f.read()
        return out if any(n.startswith(("data_batch", "train")) for n in out) else {}
    if not path.is_dir():
        return {}
    for folder in [path, *sorted(path.glob("cifar-*-python")), *sorted(path.glob("cifar-*-batches-py"))]:
        present = {f.name: f for f in folder.iterdir() if f.is_file() and f.name in _CIFAR_NAMES}
        if any(n.startswith(("data_batch", "train")) for n in present):
            return {n: f.read_bytes() for n, f in present.items()}
    return {}


# --------------------------------------------------------------------------- detection


def open_source(
    path: str | Path,
    *,
    kind: str = "auto",
    class_map: str | Path | None = None,
    pair_dirs: tuple[str, str] = DEFAULT_PAIR_DIRS,
    root: str | Path | None = None,
) -> Source:
    """Opens a dataset, detecting its layout unless ``kind`` names it.

    Args:
        path: a folder, a CSV/TSV list, a zip/tar archive, an IDX folder or CIFAR batches.
        kind: auto, folder, csv, archive, paired, idx or cifar.
        class_map: optional file mapping folder names to class names (Imagenette ids).
        pair_dirs: the two folder names of the paired layout; names other than the default must
            exist (a typo would otherwise silently read the folder as unpaired classes).
        root: base folder for relative paths of a CSV list (default: the list's folder).
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"dataset not found: {p}")
    mapping = load_class_map(class_map) if class_map else None
    if kind == "auto":
        kind = detect_kind(p, pair_dirs)
        if tuple(pair_dirs) != DEFAULT_PAIR_DIRS and kind != "paired":
            raise UserError(
                f"--pair-dirs {','.join(pair_dirs)}: {p} holds no '{pair_dirs[0]}/' and '{pair_dirs[1]}/' folders side by side "
                "(checked 3 levels down); name two folders that exist, or drop --pair-dirs"
            )
    if kind == "folder":
        return FolderSource.open(p, mapping)
    if kind == "csv":
        return CsvSource.open(p, root)
    if kind == "archive":
        return ArchiveSource.open(p, mapping)
    if kind == "paired":
        return PairedSource.open(p, *pair_dirs)
    if kind == "idx":
        return IdxSource.open(p)
    if kind == "cifar":
        return CifarSource.open(p)
    raise UserError(f"unknown source kind {kind!r}; use auto, folder, csv, archive, paired, idx or cifar")


SOURCE_KINDS = ("auto", "folder", "csv", "archive", "paired", "idx", "cifar")


def detect_kind(p: Path, pair_dirs: tuple[str, str] = ("face", "comics")) -> str:
    """Guesses the layout of a dataset path."""
    if p.is_file():
        suffix = "".join(p.suffixes[-2:]).lower()
        if p.suffix.lower() in (".csv", ".tsv"):
            return "csv"
        if _cifar_members(p):
            return "cifar"
        if zipfile.is_zipfile(p) or tarfile.is_tarfile(p) or suffix in (".tar.gz", ".tar.bz2", ".tar.xz"):
            return "archive"
        raise UserError(f"{p}: not a dataset file; expected a folder, .csv/.tsv, .zip or .tar(.gz)")
    if idx_files(p):
        return "idx"
    if _cifar_members(p):
        return "cifar"
    if find_paired_root(p, *pair_dirs) is not None:
        return "paired"
    return "folder"
