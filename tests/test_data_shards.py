"""Shard sets: a cache split into per-machine parts, each a complete cache of the same format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _images import write_class_folders

from tellapart._errors import UserError
from tellapart.cli import main
from tellapart.data import Cache, PrepareConfig, Preprocess, ShardSet, SplitConfig, open_source, prepare, shard_cache
from tellapart.data._shards import assign_part


@pytest.fixture(scope="module")
def source_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """Three unequal classes (train counts 10 / 8 / 6 after the split), so stratification shows."""
    root = tmp_path_factory.mktemp("shards")
    write_class_folders(root / "ds", {"ant": 15, "bee": 12, "cat": 9})
    cfg = PrepareConfig(preprocess=Preprocess(size=8), split=SplitConfig(test=1 / 6, val=0.2), workers=1)
    return prepare(open_source(root / "ds"), root / "cache", cfg, progress=False)


def test_parts_hold_disjoint_stratified_train_and_every_val_and_test_row(source_cache: Cache, tmp_path: Path) -> None:
    paths = shard_cache(source_cache, 3, tmp_path / "set", progress=False)
    assert [p.name for p in paths] == ["part-000", "part-001", "part-002"]
    parts = [Cache(p) for p in paths]  # each part opens as an ordinary cache
    src, ids = source_cache, np.asarray(source_cache.ids)
    train_ids = [set(np.asarray(p.ids)[p.indices("train")].tolist()) for p in parts]
    assert set().union(*train_ids) == set(ids[src.indices("train")].tolist())  # together: the whole train split
    assert sum(len(t) for t in train_ids) == len(src.indices("train"))  # and disjoint
    for split in ("val", "test"):
        for p in parts:  # whole val and test in every part
            assert np.asarray(p.ids)[p.indices(split)].tolist() == ids[src.indices(split)].tolist()
    per_class = np.array([np.bincount(p.labels[p.indices("train")], minlength=src.num_classes) for p in parts])
    assert (per_class.max(0) - per_class.min(0) <= 1).all()  # stratified: per class the parts differ by at most one
    for p in parts:  # same classes, preprocessing and normalisation everywhere; pixels copied exactly
        assert (p.class_names, p.preprocess, p.mean, p.std) == (src.class_names, src.preprocess, src.mean, src.std)
        rows = {i: k for k, i in enumerate(src.ids)}
        source_rows = np.array([rows[i] for i in p.ids])
        assert np.array_equal(np.asarray(p.pixels), np.asarray(src.pixels[source_rows]))
        assert np.array_equal(p.labels, src.labels[source_rows])
    index = json.loads((tmp_path / "set" / "shards.json").read_text())
    assert index["parts"] == ["part-000", "part-001", "part-002"]
    assert index["source"]["fingerprint"] == src.fingerprint
    assert index["train_counts"] == [len(t) for t in train_ids]
    assert len({p.fingerprint for p in parts} | {src.fingerprint}) == 4  # each part is a cache of its own
    assert ShardSet(tmp_path / "set").fingerprint == index["fingerprint"]


@pytest.mark.parametrize("parts", [0, -1, 7])
def test_bad_part_counts_are_refused_with_the_range(source_cache: Cache, tmp_path: Path, parts: int) -> None:
    smallest = min(np.bincount(source_cache.labels[source_cache.indices("train")]))
    with pytest.raises(UserError, match=f"--parts {parts}: choose 1 to {smallest}"):
        shard_cache(source_cache, parts, tmp_path / "set", progress=False)
    assert not (tmp_path / "set" / "shards.json").exists()


def test_cli_writes_the_set_and_refuses_a_non_empty_out(source_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    assert main(["data", "shard", str(source_cache.path), "--parts", "2", "--out", str(out), "--quiet"]) == 0
    assert ShardSet(out).parts == 2
    assert main(["data", "shard", str(source_cache.path), "--parts", "2", "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "shard", str(source_cache.path), "--parts", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--parts 0" in capsys.readouterr().err
    with pytest.raises(UserError, match="is a shard set"):  # the set itself is not one cache: say what to do
        Cache(out)


def test_single_process_refuses_a_multi_part_set_and_names_the_source(source_cache: Cache, tmp_path: Path) -> None:
    shard_cache(source_cache, 2, tmp_path / "set", progress=False)
    with pytest.raises(UserError, match=f"train on its source cache {source_cache.path.resolve()}"):
        ShardSet(tmp_path / "set").share(rank=0, world=1, local_rank=0, node=0, nodes=1)


def test_missing_part_says_how_to_get_it(source_cache: Cache, tmp_path: Path) -> None:
    shard_cache(source_cache, 2, tmp_path / "set", progress=False)
    import shutil

    shutil.rmtree(tmp_path / "set" / "part-001")  # this machine holds part 0 only
    shards = ShardSet(tmp_path / "set")
    assert shards.share(rank=0, world=2, local_rank=0, node=0, nodes=2)[0].path.name == "part-000"
    with pytest.raises(UserError, match="part-001 is not on this machine"):
        shards.share(rank=1, world=2, local_rank=0, node=1, nodes=2)


@pytest.mark.parametrize(
    ("parts", "world", "nodes", "expected"),
    [
        (2, 2, 1, [(0, 0, 1), (1, 0, 1)]),  # one process per part, on one machine
        (4, 4, 2, [(0, 0, 1), (1, 0, 1), (2, 0, 1), (3, 0, 1)]),  # one process per part, two machines
        (2, 4, 2, [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]),  # one part per machine, its 2 processes split it
        (2, 4, 4, [(0, 0, 2), (1, 0, 2), (0, 1, 2), (1, 1, 2)]),  # 4 machines, 2 parts: two machines per part
    ],
)
def test_assignment_gives_every_part_the_same_number_of_readers(parts: int, world: int, nodes: int, expected: list[tuple[int, int, int]]) -> None:
    per_node = world // nodes
    got = [assign_part(parts, rank=r, world=world, local_rank=r % per_node, node=r // per_node, nodes=nodes) for r in range(world)]
    assert got == expected
    assert len(set(got)) == world  # no two processes read the same rows


def test_assignment_that_cannot_be_even_is_refused() -> None:
    with pytest.raises(UserError, match="cannot be split evenly over 4 process"):
        assign_part(2, rank=0, world=4, local_rank=0, node=0, nodes=1)  # 4 processes on one machine, 2 parts
