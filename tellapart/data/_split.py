"""Stratified train/val/test splits that keep groups (e.g. a face and its comic twin) together."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tellapart._errors import UserError

__all__ = ["SplitConfig", "split_by_group", "stratified_cap", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """How items are assigned to train, val and test."""

    test: float = 1 / 6  # share of all items held out for the test set (when the source has none)
    val: float = 0.2  # share of the remaining training pool used for validation (when the source has none)
    seed: int = 0  # the same seed gives the same split
    by_group: bool = True  # keep each group (pair) inside one split

    def __post_init__(self) -> None:
        if not 0.0 <= self.test < 1.0:
            raise UserError(f"--test must be in [0, 1), got {self.test}")
        if not 0.0 <= self.val < 1.0:
            raise UserError(f"--val must be in [0, 1), got {self.val}")


def split_by_group(
    labels: Sequence[str],
    groups: Sequence[str | None],
    given: Sequence[str | None],
    cfg: SplitConfig,
) -> tuple[list[str], list[str]]:
    """Assigns each item to a split; returns (splits, notes for the user).

    Respects a source's own splits: items it puts in test stay in test, and so on. When the
    source has train and val but no test, its val becomes the test set (it was never used for
    fitting) and validation is carved from train. Shares are cut per stratum (the sorted label
    multiset of a group) so every split keeps the class balance; the unit shuffled is the group.
    """
    n = len(labels)
    notes: list[str] = []
    present = {s for s in given if s}
    if present and len(present) < n and any(s is None for s in given):
        raise UserError("the source gives a split for some items but not for others; give one for every item or none")
    splits: list[str | None] = list(given)
    if present == {"train", "val"}:
        splits = ["test" if s == "val" else s for s in splits]
        notes.append("the source has train and val but no test: its val is the test set, validation comes from train")
        present = {"train", "test"}
    if present and "train" not in present:
        raise UserError(f"the source's splits {sorted(present)} have no train split")
    rng = np.random.default_rng(cfg.seed)
    units = _units(groups, cfg.by_group)
    for name, share in (("test", cfg.test), ("val", cfg.val)):
        if name in present:
            continue
        pool = [i for i in range(n) if splits[i] in (None, "train")]
        for i in _carve(pool, labels, units, share, rng):
            splits[i] = name
    splits = [s or "train" for s in splits]
    notes += _missing_class_warnings(labels, splits, carved=[s for s in ("val", "test") if s in splits])
    return [str(s) for s in splits], notes


def _missing_class_warnings(labels: Sequence[str], splits: Sequence[str], carved: Sequence[str]) -> list[str]:
    """A class too small to reach every carved split (one image, say) is never scored there: say so."""
    present: dict[str, set[str]] = defaultdict(set)
    totals: dict[str, int] = defaultdict(int)
    for label, split in zip(labels, splits):
        present[label].add(str(split))
        totals[label] += 1
    warnings = []
    for label in sorted(present):
        absent = [s for s in carved if s not in present[label]]
        if absent:
            warnings.append(
                f"WARNING: class {label!r} has {totals[label]} image(s) and none in {' or '.join(absent)}: "
                f"{' and '.join(absent)} accuracy never scores it; add images of it (or merge or drop the class)"
            )
    return warnings


def _units(groups: Sequence[str | None], by_group: bool) -> list[str]:
    """The shuffling unit of each item: its group, or itself when it has none."""
    return [f"g:{g}" if (by_group and g is not None) else f"i:{i}" for i, g in enumerate(groups)]


def _carve(pool: list[int], labels: Sequence[str], units: Sequence[str], share: float, rng: np.random.Generator) -> list[int]:
    """Picks about ``share`` of ``pool`` by whole units, stratified by each unit's labels."""
    if share <= 0 or not pool:
        return []
    members: dict[str, list[int]] = defaultdict(list)
    for i in pool:
        members[units[i]].append(i)
    strata: dict[str, list[str]] = defaultdict(list)
    for unit, idx in members.items():
        strata["|".join(sorted(labels[i] for i in idx))].append(unit)
    chosen: list[int] = []
    carry = 0.0  # rounding remainder carried across strata keeps the overall share exact
    for key in sorted(strata):
        unit_list = sorted(strata[key])
        rng.shuffle(unit_list)
        want = share * len(unit_list) + carry
        take = int(np.floor(want + 0.5))
        carry = want - take
        for unit in unit_list[:take]:
            chosen.extend(members[unit])
    return sorted(chosen)


def stratified_cap(rows: np.ndarray, labels: np.ndarray, cap: int, *, seed: int, salt: int) -> np.ndarray:
    """At most ``cap`` of ``rows``, in ascending order, each class keeping its share (at least one row each).

    ``salt`` keeps one caller's draw independent of another's for the same seed (the classical
    baselines and the label-issue check sample the same cache differently).
    """
    if len(rows) <= cap:
        return rows
    rng = np.random.default_rng([seed, salt])
    keep = []
    for label in np.unique(labels[rows]):
        members = rows[labels[rows] == label]
        keep.append(rng.permutation(members)[: max(1, int(round(cap * len(members) / len(rows))))])
    return np.sort(np.concatenate(keep))
