"""Files every stage writes: atomic text and byte writes, and ranked tables as CSV + JSON."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tellapart._errors import UserError

__all__ = ["atomic_write", "atomic_write_bytes", "storage_error", "write_table", "rank_by_validation", "STORAGE_ERRNOS"]

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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, path, len(data)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_table(out: Path, stem: str, rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """``OUT/STEM.csv`` (the named columns) and ``OUT/STEM.json`` (every key), both atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / f"{stem}.csv", buf.getvalue())
    atomic_write(out / f"{stem}.json", json.dumps(list(rows), indent=2, default=str))


def rank_by_validation(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows ranked by validation accuracy (ties: lower validation loss, then their order), ``rank`` first."""
    def loss(r: Mapping[str, Any]) -> float:  # none recorded (an SVM's) loses ties to a recorded one
        return float("inf") if r.get("val_loss") is None else float(r["val_loss"])

    ranked = sorted(rows, key=lambda r: (r.get("val_acc") is None, -(r.get("val_acc") or 0.0), loss(r)))
    return [{"rank": k, **r} for k, r in enumerate(ranked, 1)]
