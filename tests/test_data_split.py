"""Splits: stratified shares, groups never straddling, the source's own splits respected."""

from __future__ import annotations

from collections import Counter

import pytest

from tellapart._errors import UserError
from tellapart.data import SplitConfig, split_by_group


def _shares(splits: list[str]) -> dict[str, int]:
    return dict(Counter(splits))


def test_stratified_shares_are_close_to_the_request() -> None:
    labels = ["cat"] * 300 + ["dog"] * 200 + ["eel"] * 100
    splits, notes = split_by_group(labels, [None] * 600, [None] * 600, SplitConfig(test=1 / 6, val=0.2, seed=1))
    counts = _shares(splits)
    assert abs(counts["test"] - 100) <= 2 and abs(counts["val"] - 100) <= 2 and notes == []
    for label, n in (("cat", 300), ("dog", 200), ("eel", 100)):  # each class keeps its share in each split
        test = sum(1 for lab, s in zip(labels, splits) if lab == label and s == "test")
        assert abs(test - n / 6) <= 1.5


def test_groups_never_straddle_splits() -> None:
    n_pairs = 300
    labels = ["face", "comics"] * n_pairs
    groups = [str(k // 2) for k in range(2 * n_pairs)]
    splits, _ = split_by_group(labels, groups, [None] * len(labels), SplitConfig(seed=3))
    by_group: dict[str, set[str]] = {}
    for g, s in zip(groups, splits):
        by_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    counts = _shares(splits)
    assert abs(counts["test"] - 100) <= 2  # a sixth of 600 images, in whole pairs


def test_without_group_split_pairs_do_straddle() -> None:
    labels = ["face", "comics"] * 300
    groups = [str(k // 2) for k in range(600)]
    splits, _ = split_by_group(labels, groups, [None] * 600, SplitConfig(seed=3, by_group=False))
    straddling = sum(1 for k in range(0, 600, 2) if splits[k] != splits[k + 1])
    assert straddling > 50


def test_given_train_val_test_are_kept() -> None:
    given = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    labels = ["a", "b"] * 5
    splits, notes = split_by_group(labels, [None] * 10, given, SplitConfig())
    assert splits == given and notes == []


def test_given_train_and_test_val_is_carved_from_train() -> None:
    given = ["train"] * 50 + ["test"] * 10
    labels = ["a", "b"] * 30
    splits, notes = split_by_group(labels, [None] * 60, given, SplitConfig(val=0.2))
    assert splits[50:] == ["test"] * 10  # the source's test set is untouched
    assert _shares(splits[:50]) == {"train": 40, "val": 10}
    assert notes == []


def test_given_train_and_val_val_becomes_test() -> None:
    given = ["train"] * 50 + ["val"] * 10
    labels = ["a", "b"] * 30
    splits, notes = split_by_group(labels, [None] * 60, given, SplitConfig(val=0.2))
    assert splits[50:] == ["test"] * 10
    assert _shares(splits[:50]) == {"train": 40, "val": 10}
    assert len(notes) == 1 and "its val is the test set" in notes[0]


def test_only_train_given_carves_test_and_val() -> None:
    splits, _ = split_by_group(["a", "b"] * 30, [None] * 60, ["train"] * 60, SplitConfig(test=0.5, val=0.5))
    assert _shares(splits) == {"train": 15, "val": 15, "test": 30}


def test_same_seed_same_split_other_seed_other_split() -> None:
    labels = ["a", "b", "c"] * 40
    groups = [None] * 120
    first = split_by_group(labels, groups, [None] * 120, SplitConfig(seed=7))[0]
    assert split_by_group(labels, groups, [None] * 120, SplitConfig(seed=7))[0] == first
    assert split_by_group(labels, groups, [None] * 120, SplitConfig(seed=8))[0] != first


def test_inconsistent_or_trainless_splits_are_refused() -> None:
    with pytest.raises(UserError, match="some items but not for others"):
        split_by_group(["a", "b", "a"], [None] * 3, ["train", None, "test"], SplitConfig())
    with pytest.raises(UserError, match="no train split"):
        split_by_group(["a", "b"], [None] * 2, ["test", "val"], SplitConfig())


@pytest.mark.parametrize(("test", "val"), [(1.0, 0.2), (0.1, -0.1)])
def test_share_out_of_range_is_named(test: float, val: float) -> None:
    with pytest.raises(UserError, match="--test" if test >= 1 else "--val"):
        SplitConfig(test=test, val=val)
