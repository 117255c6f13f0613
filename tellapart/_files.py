"""Files every stage writes: atomic text writes and ranked tables as CSV + JSON."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_table", "rank_by_validation"]


def atomic_write(path: Path, text: str) -> None:
    """Writes ``text`` to a sibling temporary file, then renames it over ``path``: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    ranked = sorted(rows, key=lambda r: (r.get("val_acc") is None, -(r.get("val_acc") or 0.0), r.get("val_loss") or 0.0))
    return [{"rank": k, **r} for k, r in enumerate(ranked, 1)]
