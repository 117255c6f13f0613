"""``tellapart data check``: is this dataset usable, and what is wrong with it?"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._decode import Decoded, Preprocess
from ._dedup import Native, pair_key
from ._scan import find_duplicates, scan
from ._sources import PairedSource, Source, layout_notes, left_out

__all__ = ["CheckReport", "check_source"]

#: Small enough to decode fast (JPEG draft at 1/8), large enough for a 32x32 perceptual hash.
_PREVIEW = Preprocess(size=32, grayscale=True, fit="stretch")


@dataclass(frozen=True)
class CheckReport:
    """What ``check`` found; ``usable`` is False when the data cannot train a classifier."""

    source: str
    kind: str
    total: int
    readable: int
    class_counts: dict[str, dict[str, int]]  # split (or "all") -> class -> readable images
    sizes: dict[str, Any]  # width/height min, median, max of readable images
    modes: dict[str, int]
    formats: dict[str, int]
    unreadable: list[dict[str, str]]  # {id, error}
    exact_duplicates: list[list[str]]
    near_duplicates: list[dict[str, Any]]  # {a, b, distance, similarity}: every pair confirmed on the pixels
    cross_split_duplicates: list[dict[str, Any]]  # {a, a_split, b, b_split, kind}, every one
    unpaired: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # files seen but not images of the dataset, by reason
    notes: list[dict[str, str]] = field(default_factory=list)  # {id, note}: decoded, but worth a look (e.g. blank after alpha)
    problems: list[str] = field(default_factory=list)  # reasons the data is unusable
    warnings: list[str] = field(default_factory=list)
    near_candidates: int = 0  # candidate pairs (close in hash or nearest neighbours) compared on the pixels
    cross_split_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> "test~train" -> pairs
    layout_notes: list[str] = field(default_factory=list)  # how the layout was read, e.g. classes above nested folders

    @property
    def usable(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "usable": self.usable}

    def render(self) -> str:
        lines = [f"{self.source} ({self.kind}): {self.readable} of {self.total} images readable"]
        for split, counts in self.class_counts.items():
            lines.append(f"  {split:5s} " + ", ".join(f"{c}: {n}" for c, n in counts.items()))
        if self.sizes:
            w, h = self.sizes["width"], self.sizes["height"]
            lines.append(
                f"  size: width {w['min']}-{w['max']} (median {w['median']}), height {h['min']}-{h['max']} (median {h['median']})"
            )
        lines.append("  modes: " + ", ".join(f"{m} {n}" for m, n in self.modes.items()))
        lines.append("  formats: " + ", ".join(f"{m} {n}" for m, n in self.formats.items()))
        if self.unreadable:
            lines.append(f"  unreadable: {len(self.unreadable)}")
            lines += [f"    {u['id']}: {u['error']}" for u in self.unreadable[:20]]
        lines.append(f"  exact duplicate groups: {len(self.exact_duplicates)}")
        lines += [f"    {' = '.join(g[:4])}" for g in self.exact_duplicates[:10]]
        lines.append(
            f"  near-duplicate pairs: {len(self.near_duplicates)} (confirmed on the pixels, of {self.near_candidates} candidates)"
        )
        lines += [
            f"    {d['a']} ~ {d['b']} (hash distance {d['distance']}, similarity {d['similarity']:.3f})" for d in self.near_duplicates[:10]
        ]
        if self.cross_split_duplicates:
            lines.append(f"  duplicates across splits (leakage): {len(self.cross_split_duplicates)}")
            for kind, by_pair in sorted(self.cross_split_counts.items()):
                lines.append(f"    {kind}: " + ", ".join(f"{key} {n}" for key, n in sorted(by_pair.items())))
            lines += [f"    {d['a']} [{d['a_split']}] ~ {d['b']} [{d['b_split']}]" for d in self.cross_split_duplicates[:10]]
        if self.left_out:
            lines.append(f"  left out {sum(self.left_out.values())} file(s) that are not images: "
                         + ", ".join(f"{why} {n}" for why, n in self.left_out.items()))
        if self.notes:
            lines.append(f"  notes on {len(self.notes)} image(s), e.g. {self.notes[0]['id']}: {self.notes[0]['note']}")
        if self.unpaired:
            lines.append(f"  files without a twin: {len(self.unpaired)}, e.g. {', '.join(self.unpaired[:5])}")
        lines += [f"note: {n}" for n in self.layout_notes]
        lines += [f"WARNING: {w}" for w in self.warnings]
        lines += [f"PROBLEM: {p}" for p in self.problems]
        lines.append("usable: yes" if self.usable else "usable: no")
        return "\n".join(lines)


def check_source(source: Source, *, workers: int = 0, near_threshold: int = 4, progress: bool = True) -> CheckReport:
    """Decodes every image of ``source`` at preview size and reports counts, sizes and problems."""
    items = source.items()
    thumbs = np.zeros((len(items), _PREVIEW.size, _PREVIEW.size), dtype=np.uint8)  # 1 KB an image: pairs are confirmed on these

    native = Native.empty(len(items))  # tiny images' own pixels: their crops and shifts are confirmed on these

    def keep_thumbnail(index: int, d: Decoded) -> None:
        if d.pixels is not None:
            thumbs[index] = d.pixels[:, :, 0]
        if d.native is not None:
            native.put(index, d.native)

    decoded = scan(source, items, _PREVIEW, workers=workers, progress=progress, desc="check", on_result=keep_thumbnail)
    ok = [d.error is None for d in decoded]
    readable = [i for i, good in enumerate(ok) if good]
    splits = [items[i].split or "all" for i in range(len(items))]
    counts: dict[str, Counter[str]] = {}
    for i in readable:
        counts.setdefault(splits[i], Counter())[items[i].label] += 1
    class_counts = {s: dict(sorted(c.items())) for s, c in sorted(counts.items())}
    dups = find_duplicates(
        [d.content_hash for d in decoded], thumbs, ok, sides=[min(d.width, d.height) for d in decoded], threshold=near_threshold,
        native=native,
    )
    groups = [i.group for i in items]
    near = [p for p in dups.near if not (groups[p[0]] is not None and groups[p[0]] == groups[p[1]])]
    cross = [
        {"a": items[a].id, "a_split": splits[a], "b": items[b].id, "b_split": splits[b], "kind": kind}
        for kind, pairs in (("exact", [(g[0], b) for g in dups.exact for b in g[1:]]), ("near", [p[:2] for p in near]))
        for a, b in pairs
        if splits[a] != splits[b] and "all" not in (splits[a], splits[b])
    ]
    cross_counts: dict[str, dict[str, int]] = {}
    for d in cross:
        by_pair = cross_counts.setdefault(d["kind"], {})
        key = pair_key(d["a_split"], d["b_split"])
        by_pair[key] = by_pair.get(key, 0) + 1
    all_labels = {i.label for i in items}
    readable_labels = {items[i].label for i in readable}
    problems = []
    if not readable:
        problems.append("no image could be read")
    if len(readable_labels) < 2:
        problems.append(f"a classifier needs at least two classes with readable images; found {sorted(readable_labels)}")
    for label in sorted(all_labels - readable_labels):
        problems.append(f"class {label!r} has no readable image")
    warnings = []
    if cross:
        spread = "; ".join(f"{n} {kind} {key}" for kind, by_pair in sorted(cross_counts.items()) for key, n in sorted(by_pair.items()))
        warnings.append(f"{len(cross)} duplicate pair(s) cross the source's splits ({spread}): test results would be inflated")
    unpaired = source.unpaired() if isinstance(source, PairedSource) else []
    return CheckReport(
        source=str(source.path),
        kind=source.kind,
        total=len(items),
        readable=len(readable),
        class_counts=class_counts,
        sizes=_size_stats([decoded[i].width for i in readable], [decoded[i].height for i in readable]),
        modes=dict(Counter(decoded[i].mode for i in readable).most_common()),
        formats=dict(Counter(decoded[i].format for i in readable).most_common()),
        unreadable=[{"id": items[i].id, "error": str(decoded[i].error)} for i, good in enumerate(ok) if not good],
        exact_duplicates=[[items[i].id for i in g] for g in dups.exact],
        near_duplicates=[{"a": items[a].id, "b": items[b].id, "distance": d, "similarity": sim} for a, b, d, sim in near],
        cross_split_duplicates=cross,
        near_candidates=dups.candidates,
        cross_split_counts=cross_counts,
        unpaired=unpaired,
        left_out=left_out(source),
        notes=[{"id": items[i].id, "note": str(decoded[i].note)} for i in readable if decoded[i].note],
        layout_notes=layout_notes(source),
        problems=problems,
        warnings=warnings,
    )


def _size_stats(widths: list[int], heights: list[int]) -> dict[str, Any]:
    if not widths:
        return {}

    def stats(v: list[int]) -> dict[str, int]:
        a = np.asarray(v)
        return {"min": int(a.min()), "median": int(np.median(a)), "max": int(a.max())}

    return {"width": stats(widths), "height": stats(heights)}
