"""A source cut down to about ``limit`` images: ``prepare: {limit: N}`` of a recipe (``--quick``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from tellapart.data import Item, Payload, Source, fingerprint_digest

__all__ = ["SubsetSource", "subset_items"]


def subset_items(items: Sequence[Item], limit: int, seed: int = 0) -> list[Item]:
    """About ``limit`` of ``items``, in their order: whole groups, the same share of each split and class.

    The unit drawn is a group (a face and its comic) or a single item; units are drawn per
    stratum (the source's split and the unit's labels), with rounding carried across strata so
    the total lands on ``limit`` give or take one group.
    """
    if limit >= len(items):
        return list(items)
    members: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        members[f"g:{item.group}" if item.group is not None else f"i:{item.id}"].append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for unit, idx in members.items():
        labels = "|".join(sorted(items[i].label for i in idx))
        strata[f"{items[idx[0]].split}|{labels}"].append(unit)
    share = limit / len(items)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    carry = 0.0
    for key in sorted(strata):
        units = sorted(strata[key])
        rng.shuffle(units)
        size = sum(len(members[u]) for u in units)
        want = share * size + carry
        taken = 0
        for unit in units:
            if taken + len(members[unit]) / 2 > want:
                break
            chosen.extend(members[unit])
            taken += len(members[unit])
        carry = want - taken
    return [items[i] for i in sorted(chosen)]


@dataclass(frozen=True, eq=False)
class SubsetSource:
    """``inner`` with only :func:`subset_items` of its items; everything else is the inner source's."""

    inner: Source
    limit: int  # about this many images
    seed: int = 0  # which ones

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def path(self) -> Path:
        return self.inner.path

    @property
    def root(self) -> Path:  # a CSV list's base folder (the cache links mistakes to the files)
        return Path(getattr(self.inner, "root", self.inner.path))

    @cached_property
    def _items(self) -> list[Item]:
        return subset_items(self.inner.items(), self.limit, self.seed)

    def items(self) -> list[Item]:
        return list(self._items)

    def payloads(self, items: Sequence[Item]) -> Iterator[Payload]:
        return self.inner.payloads(items)

    def fingerprint(self) -> str:
        return fingerprint_digest([self.inner.fingerprint(), f"limit={self.limit}", f"seed={self.seed}"])
