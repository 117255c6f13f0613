"""Files every stage writes: atomic text and byte writes, and ranked tables as CSV + JSON."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tellapart._errors import UserError

__all__ = ["atomic_output", "atomic_write", "atomic_write_bytes", "commit_file", "storage_error", "write_table", "rank_by_validation", "leaderboard_key", "STORAGE_ERRNOS"]

#: Write failures that are the storage's fault, not the program's: full disk, quota, I/O error.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def storage_error(exc: OSError, path: Path, needed: int | None = None) -> UserError:
    """A UserError for a write that failed for lack of space (or an I/O error): where, and how much is needed."""
    where = path if path.is_dir() else path.parent
    while not where.exists() and where != where.parent:  # the folder may not have been created yet
        where = where.parent
    try:
        free: int | None = shutil.disk_usage(where).free
    except OSError:
        free = None
    what = os.strerror(exc.errno) if exc.errno else str(exc)
    need = f"; it needs about {_mb(needed)} and {_mb(free)} is free" if needed is not None and free is not None else (
        f"; {_mb(free)} is free" if free is not None else ""
    )
    return UserError(f"cannot write {path}: {what}{need}. Free some space (or choose another folder) and run the command again")


def _mb(n: int | None) -> str:
    """Bytes for people: 512 bytes, 30.7 kB, 1.2 MB, 3.4 GB."""
    n = n or 0
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def atomic_write(path: Path, text: str) -> None:
    """Writes ``text`` to a sibling temporary file, then renames it over ``path``: readers never see half a file."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` via a synced temporary file and a rename.

    A failed write (a full disk) removes the temporary file, keeps the previous ``path`` as it was,
    and raises a UserError naming the path and the space needed.
    """
    with atomic_output(path, needed=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def atomic_output(path: Path, *, needed: int | None = None) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write (by any library: ``torch.save``, ``onnx.save``,
    ``safetensors``); on success it is synced to disk and renamed over ``path``.

    The one atomic-write routine: on any failure the temporary file is removed and ``path`` keeps
    its previous content; a full disk becomes a UserError naming the path (and ``needed`` bytes).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        commit_file(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, path, needed) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def commit_file(tmp: Path, path: Path) -> None:
    """Syncs the written file ``tmp`` and renames it over ``path``, then syncs the folder (the rename itself)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened (some filesystems): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_table(out: Path, stem: str, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """``OUT/STEM.csv`` (the named columns) and ``OUT/STEM.json`` (every key), both atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / f"{stem}.csv", buf.getvalue())
    atomic_write(out / f"{stem}.json", json.dumps(list(rows), indent=2, default=str))


def leaderboard_key(row: Mapping[str, Any], value_key: str = "val_acc") -> tuple[Any, ...]:
    """The one order of leaderboard rows, best first: files, tables and charts all sort by it.

    Higher ``value_key`` first; ties: lower validation loss, then fewer training seconds, then the
    name, so equal scores never come out in a different order in the chart and in the table.
    A missing value (an SVM records no loss, a failed run no accuracy) loses ties to a recorded one.
    """
    def number(key: str) -> float:
        value = row.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else math.inf

    value = row.get(value_key)
    scored = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    name = str(row.get("name") or row.get("rung") or "")
    return (not scored, -float(value) if scored else 0.0, number("val_loss"), number("train_seconds"), name)


def rank_by_validation(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows ranked by :func:`leaderboard_key` on validation accuracy, ``rank`` first."""
    ranked = sorted(rows, key=leaderboard_key)
    return [{"rank": k, **r} for k, r in enumerate(ranked, 1)]
