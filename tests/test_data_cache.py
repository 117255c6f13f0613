"""The prepared cache: contents, reuse, rebuilds, atomicity, skipped files, duplicates, batches."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _images import make_image, write_class_folders, write_image

from tellapart._errors import UserError
from tellapart.data import (
    Cache,
    PrepareConfig,
    Preprocess,
    SplitConfig,
    decode,
    epoch_order,
    iter_batches,
    open_source,
    prepare,
    to_tensor,
)
from tellapart.data import _cache


def _prepare(source: Path, out: Path, *, workers: int = 1, progress: bool = False, **pre: object) -> Cache:
    split = pre.pop("split", SplitConfig())
    strict = bool(pre.pop("strict", False))
    cfg = PrepareConfig(preprocess=Preprocess(**{"size": 8, **pre}), split=split, strict=strict, workers=workers)  # type: ignore[arg-type]
    return prepare(open_source(source), out, cfg, progress=progress)


def _pixels_stat(cache: Cache) -> tuple[int, int]:
    st = (cache.path / "pixels.u8").stat()
    return st.st_ino, st.st_mtime_ns


# --------------------------------------------------------------------------- contents


def test_cache_holds_every_image_with_its_class_and_split(two_classes: Path, tmp_path: Path) -> None:
    cache = _prepare(two_classes, tmp_path / "cache", size=12)
    assert cache.pixels.shape == (12, 12, 12, 3) and cache.pixels.dtype == np.uint8
    assert cache.class_names == ["cat", "dog"] and cache.num_classes == 2
    m = cache.manifest
    assert m["n"] == 12 and m["skipped"] == [] and m["source"]["kind"] == "folder"
    counts = m["class_counts"]
    assert sum(sum(c.values()) for c in counts.values()) == 12
    assert set(cache.splits) == {"train", "val", "test"}
    assert sorted(np.concatenate([cache.indices(s) for s in ("train", "val", "test")]).tolist()) == list(range(12))
    # rows are the decoded files, labels index class_names
    row = cache.ids.index("dog/003.png")
    expected = decode(str(two_classes / "dog" / "003.png"), Preprocess(size=12)).pixels
    assert np.array_equal(cache.pixels[row], expected) and cache.class_names[cache.labels[row]] == "dog"
    assert cache.source_path(row) == (two_classes / "dog" / "003.png").resolve()
    # mean/std of the train split, in [0, 1] units, per channel
    train = cache.pixels[cache.indices("train")].reshape(-1, 3) / 255.0
    np.testing.assert_allclose(cache.mean, train.mean(0), atol=1e-5)
    np.testing.assert_allclose(cache.std, train.std(0), atol=1e-5)
    assert "12 images, 12x12x3" in cache.summary()


def test_grayscale_cache_has_one_channel(two_classes: Path, tmp_path: Path) -> None:
    cache = _prepare(two_classes, tmp_path / "cache", size=8, grayscale=True)
    assert cache.pixels.shape == (12, 8, 8, 1) and len(cache.mean) == 1 and len(cache.std) == 1
    assert Cache(cache.path).preprocess == Preprocess(size=8, grayscale=True)


def test_not_a_cache_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a prepared cache"):
        Cache(tmp_path)


def test_unknown_split_is_named(two_classes: Path, tmp_path: Path) -> None:
    cache = _prepare(two_classes, tmp_path / "cache")
    with pytest.raises(UserError, match="unknown split 'holdout'"):
        cache.indices("holdout")


# --------------------------------------------------------------------------- reuse and rebuilds


def test_unchanged_source_and_settings_reuse_the_cache(two_classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _prepare(two_classes, tmp_path / "cache")
    before = _pixels_stat(first)
    second = _prepare(two_classes, tmp_path / "cache", progress=True)
    assert _pixels_stat(second) == before  # not rewritten
    assert second.fingerprint == first.fingerprint
    assert "reusing" in capsys.readouterr().err



def _cached_features(cache: Cache) -> Path:
    """What training with cached backbone features writes into a cache (tellapart.train's feature cache)."""
    from tellapart.train import _features

    folder = cache.features_dir / "0123abcd"
    folder.mkdir(parents=True)
    for name in (_features._META, _features._FEATURES, _features._DONE):
        (folder / name).write_bytes(b"x")
    return folder


def test_a_cache_holding_cached_features_is_reused_and_rebuilt(two_classes: Path, tmp_path: Path) -> None:
    # a re-run of fit (or of the demo) after a pretrained candidate cached its features
    first = _prepare(two_classes, tmp_path / "cache")
    features = _cached_features(first)
    again = _prepare(two_classes, tmp_path / "cache")
    assert again.fingerprint == first.fingerprint and features.is_dir()  # reused, features kept
    rebuilt = _prepare(two_classes, tmp_path / "cache", size=10)
    assert rebuilt.fingerprint != first.fingerprint
    assert not rebuilt.features_dir.exists()  # features of the old pixels went with them
    assert not list(tmp_path.glob(".cache.old-*"))  # no old folder left behind


def test_a_foreign_file_among_cached_features_is_never_deleted(two_classes: Path, tmp_path: Path) -> None:
    first = _prepare(two_classes, tmp_path / "cache")
    _cached_features(first)
    mine = first.features_dir / "notes.txt"
    mine.write_text("mine")
    _prepare(two_classes, tmp_path / "cache", size=10)
    kept = [p for p in tmp_path.rglob("notes.txt")]
    assert len(kept) == 1 and kept[0].read_text() == "mine"  # left where the old cache was, not removed

def test_a_changed_file_rebuilds_the_cache(two_classes: Path, tmp_path: Path) -> None:
    first = _prepare(two_classes, tmp_path / "cache")
    target = two_classes / "cat" / "002.png"
    write_image(target, seed=4242)
    os.utime(target, ns=(10**9, 10**9))
    second = _prepare(two_classes, tmp_path / "cache")
    assert second.fingerprint != first.fingerprint
    row = second.ids.index("cat/002.png")
    assert np.array_equal(second.pixels[row], decode(str(target), Preprocess(size=8)).pixels)


@pytest.mark.parametrize("change", [{"size": 10}, {"grayscale": True}, {"fit": "pad"}])
def test_a_changed_setting_rebuilds_the_cache(two_classes: Path, tmp_path: Path, change: dict) -> None:
    first = _prepare(two_classes, tmp_path / "cache")
    second = _prepare(two_classes, tmp_path / "cache", **change)
    assert second.fingerprint != first.fingerprint
    assert Cache(tmp_path / "cache").preprocess == Preprocess(**{"size": 8, **change})


def test_a_changed_split_seed_rebuilds_the_cache(two_classes: Path, tmp_path: Path) -> None:
    first = _prepare(two_classes, tmp_path / "cache")
    second = _prepare(two_classes, tmp_path / "cache", split=SplitConfig(seed=5))
    assert second.fingerprint != first.fingerprint and second.manifest["settings"]["split"]["seed"] == 5


# --------------------------------------------------------------------------- atomicity


def _no_partials(parent: Path) -> bool:
    return not any(p.name.startswith(".cache.") for p in parent.iterdir())


def test_interrupted_prepare_leaves_nothing_that_looks_complete(
    two_classes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scan = _cache.scan

    def scan_then_interrupt(*args, on_result, **kwargs):  # type: ignore[no-untyped-def]
        def write_some(index, decoded):  # type: ignore[no-untyped-def]
            if index == 5:
                raise KeyboardInterrupt  # Ctrl-C halfway through writing pixels
            on_result(index, decoded)

        return real_scan(*args, on_result=write_some, **kwargs)

    monkeypatch.setattr(_cache, "scan", scan_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _prepare(two_classes, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and _no_partials(tmp_path)

    monkeypatch.setattr(_cache, "scan", real_scan)
    assert len(_prepare(two_classes, tmp_path / "cache")) == 12


def test_interrupted_rebuild_keeps_the_previous_cache(two_classes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _prepare(two_classes, tmp_path / "cache", size=8)

    def interrupt(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(_cache, "find_duplicates", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _prepare(two_classes, tmp_path / "cache", size=16)
    assert Cache(tmp_path / "cache").pixels.shape == (12, 8, 8, 3)  # still the old, complete cache
    assert _no_partials(tmp_path)


@pytest.mark.parametrize("leftover", [".cache.partial-99999", ".cache.old-99999"])
def test_leftovers_of_a_killed_prepare_are_removed(two_classes: Path, tmp_path: Path, leftover: str) -> None:
    stale = tmp_path / leftover
    stale.mkdir()
    (stale / "pixels.u8").write_bytes(b"\0" * 100)
    _prepare(two_classes, tmp_path / "cache")
    assert not stale.exists() and (tmp_path / "cache" / "manifest.json").is_file()


def test_force_rebuilds_an_up_to_date_cache(two_classes: Path, tmp_path: Path) -> None:
    first = _prepare(two_classes, tmp_path / "cache")
    before = _pixels_stat(first)
    cfg = PrepareConfig(preprocess=Preprocess(size=8), workers=1)
    again = prepare(open_source(two_classes), tmp_path / "cache", cfg, progress=False, force=True)
    assert _pixels_stat(again) != before and again.fingerprint == first.fingerprint


def test_existing_folder_that_is_not_a_cache_is_refused(two_classes: Path, tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.txt").write_text("precious")
    with pytest.raises(UserError, match=r"results exists and is not a tellapart cache"):
        _prepare(two_classes, tmp_path / "results")
    assert (tmp_path / "results" / "notes.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    assert len(_prepare(two_classes, tmp_path / "empty")) == 12  # an empty folder is fine


# --------------------------------------------------------------------------- unusable or broken data


def test_unreadable_files_are_skipped_and_listed(two_classes: Path, tmp_path: Path, bad_files) -> None:  # type: ignore[no-untyped-def]
    bad = bad_files(two_classes / "dog")
    cache = _prepare(two_classes, tmp_path / "cache")
    skipped = {s["id"]: s["error"] for s in cache.manifest["skipped"]}
    assert set(skipped) == {f"dog/{p.name}" for p in bad.values()}
    assert "decompression bomb" in skipped["dog/bomb.png"] and skipped["dog/empty.jpg"] == "empty file (0 bytes)"
    assert len(cache) == 12 and not any(i in skipped for i in cache.ids)
    assert (tmp_path / "cache" / "pixels.u8").stat().st_size == 12 * 8 * 8 * 3  # no rows for skipped files
    assert "skipped 4 unreadable file(s)" in cache.summary()


def test_strict_names_the_first_unreadable_file(two_classes: Path, tmp_path: Path) -> None:
    (two_classes / "dog" / "broken.jpg").write_text("not a jpeg")
    with pytest.raises(UserError, match=r"cannot read dog/broken.jpg: not an image.*--strict"):
        _prepare(two_classes, tmp_path / "cache", strict=True)
    assert not (tmp_path / "cache").exists() and _no_partials(tmp_path)


def test_a_single_class_is_refused(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "ds", {"cat": 3})
    with pytest.raises(UserError, match=r"at least two classes; found only \['cat'\]"):
        _prepare(tmp_path / "ds", tmp_path / "cache")


def test_a_single_readable_class_is_refused(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "ds", {"cat": 3})
    (tmp_path / "ds" / "dog").mkdir()
    (tmp_path / "ds" / "dog" / "0.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="after skipping unreadable files"):
        _prepare(tmp_path / "ds", tmp_path / "cache")


# --------------------------------------------------------------------------- splits in the cache


def test_pairs_stay_together_in_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    for k in range(40):  # 80 images: decoded by the process pool
        write_image(root / "face" / f"{k:03d}.jpg", (12, 12), seed=k)
        write_image(root / "comics" / f"{k:03d}.jpg", (12, 12), seed=100 + k)
    cache = _prepare(root, tmp_path / "cache", workers=2)
    assert len(cache) == 80
    by_group: dict[str, set[str]] = {}
    for group, split in zip(cache.groups, cache.splits):
        by_group.setdefault(str(group), set()).add(str(split))
    assert len(by_group) == 40 and all(len(s) == 1 for s in by_group.values())
    assert cache.manifest["class_counts"]["test"] == {"comics": 7, "face": 7}


def test_no_group_split_warns_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pairs"
    for k in range(6):
        write_image(root / "face" / f"{k}.png", seed=k)
        write_image(root / "comics" / f"{k}.png", seed=100 + k)
    _prepare(root, tmp_path / "cache", split=SplitConfig(by_group=False))
    err = capsys.readouterr().err
    assert "WARNING: --no-group-split" in err and "overstate" in err


def test_prepare_notes_files_without_a_twin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pairs"
    for k in range(4):
        write_image(root / "face" / f"{k}.png", seed=k)
        write_image(root / "comics" / f"{k}.png", seed=100 + k)
    write_image(root / "face" / "lonely.png", seed=50)
    cache = _prepare(root, tmp_path / "cache", progress=True)
    assert "1 file(s) have no twin" in capsys.readouterr().err and "face/lonely.png" in cache.ids


def test_source_splits_and_notes_reach_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_class_folders(root, {"cat": 5, "dog": 5}, split="train")
    write_class_folders(root, {"cat": 2, "dog": 2}, split="val", seed=50)
    cache = _prepare(root, tmp_path / "cache")
    splits = dict(zip(cache.ids, cache.splits))
    assert all(splits[i] == "test" for i in splits if i.startswith("val/"))
    assert sum(1 for i in splits if i.startswith("train/") and splits[i] == "val") == 2
    assert any("its val is the test set" in n for n in cache.manifest["notes"])


# --------------------------------------------------------------------------- duplicates


def test_duplicates_across_splits_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    write_class_folders(root, {"cat": 4, "dog": 4}, split="train", size=(32, 32), ext=".jpg")
    write_class_folders(root, {"cat": 2, "dog": 2}, split="test", size=(32, 32), ext=".jpg", seed=500)
    shutil.copy(root / "train" / "cat" / "001.jpg", root / "test" / "cat" / "copy.jpg")
    photo = make_image((32, 32), seed=777)
    photo.save(root / "train" / "dog" / "original.jpg", quality=95)
    photo.save(root / "test" / "dog" / "reencoded.jpg", quality=60)

    cache = _prepare(root, tmp_path / "cache", size=32, progress=True)
    dup = cache.manifest["duplicates"]
    assert dup["exact_groups"] == [["train/cat/001.jpg", "test/cat/copy.jpg"]] or dup["exact_groups"] == [
        ["test/cat/copy.jpg", "train/cat/001.jpg"]
    ]
    assert [{d["a_split"], d["b_split"]} for d in dup["cross_split_exact"]] == [{"train", "test"}]
    near = {frozenset((d["a"], d["b"])) for d in dup["near_pairs"]}
    assert near == {frozenset(("train/dog/original.jpg", "test/dog/reencoded.jpg"))}
    assert dup["near_pairs_count"] == 1 and len(dup["cross_split_near"]) == 1
    assert "possible train/test leakage" in capsys.readouterr().err


# --------------------------------------------------------------------------- batches


def test_iter_batches_covers_an_epoch_exactly_once(two_classes: Path, tmp_path: Path) -> None:
    cache = _prepare(two_classes, tmp_path / "cache", split=SplitConfig(test=0.0, val=0.0))
    order = epoch_order(cache.indices("train"), seed=0, epoch=0)
    batches = list(iter_batches(cache.pixels, cache.labels, order, 5))
    assert [len(rows) for _, _, rows in batches] == [5, 5, 2]
    rows = np.concatenate([r for _, _, r in batches])
    assert sorted(rows.tolist()) == list(range(12))
    for x, y, r in batches:
        assert np.array_equal(x, cache.pixels[r]) and np.array_equal(y, cache.labels[r])
    assert [len(r) for _, _, r in iter_batches(cache.pixels, cache.labels, order, 5, drop_last=True)] == [5, 5]
    resumed = [r for _, _, r in iter_batches(cache.pixels, cache.labels, order, 5, start_batch=1)]
    assert all(np.array_equal(a, b) for a, b in zip(resumed, [r for _, _, r in batches[1:]]))


def test_epoch_order_is_a_pure_function_of_seed_and_epoch() -> None:
    idx = np.arange(100, 150)
    first = epoch_order(idx, seed=1, epoch=3)
    assert np.array_equal(first, epoch_order(idx, seed=1, epoch=3))
    assert sorted(first.tolist()) == idx.tolist()
    assert not np.array_equal(first, epoch_order(idx, seed=1, epoch=4))
    assert not np.array_equal(first, epoch_order(idx, seed=2, epoch=3))
    assert np.array_equal(epoch_order(idx, seed=1, epoch=3, shuffle=False), idx)


def test_to_tensor_normalises_into_channels_last_floats() -> None:
    batch = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    x = to_tensor(batch, mean, std)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = (batch / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert to_tensor(batch, mean, std, channels_last=False).is_contiguous()
    grey = batch[..., :1]
    np.testing.assert_allclose(to_tensor(grey, [0.5], [0.2]).numpy()[:, 0], (grey[..., 0] / 255.0 - 0.5) / 0.2, rtol=1e-5, atol=1e-5)
    assert torch.equal(to_tensor(batch.astype(np.float64), mean, std), x)  # float pixels give the same float32 batch


def test_manifest_is_plain_json(two_classes: Path, tmp_path: Path) -> None:
    cache = _prepare(two_classes, tmp_path / "cache")
    manifest = json.loads((cache.path / "manifest.json").read_text())
    assert manifest["preprocess"] == {"size": 8, "grayscale": False, "fit": "stretch"}
    assert len(manifest["ids"]) == len(manifest["labels"]) == len(manifest["splits"]) == len(manifest["groups"]) == 12
