"""``check``: counts, sizes, modes, unreadable files, duplicates, and whether the data is usable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from _images import make_image, write_class_folders, write_image

from tellapart.data import check_source, open_source


def _check(path: Path, **kw):  # type: ignore[no-untyped-def]
    return check_source(open_source(path, **kw), workers=1, progress=False)


def test_report_of_a_healthy_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_image(root / "cat" / "wide.png", (40, 10), seed=1)
    write_image(root / "cat" / "gray.png", (20, 20), mode="L", seed=2)
    write_image(root / "dog" / "a.jpg", (30, 30), seed=3)
    write_image(root / "dog" / "b.jpg", (10, 50), seed=4)
    report = _check(root)
    assert report.usable and report.problems == []
    assert (report.total, report.readable) == (4, 4)
    assert report.class_counts == {"all": {"cat": 2, "dog": 2}}
    assert report.sizes == {"width": {"min": 10, "median": 25, "max": 40}, "height": {"min": 10, "median": 25, "max": 50}}
    assert report.modes == {"RGB": 3, "L": 1}
    assert report.formats == {"JPEG": 2, "PNG": 2}
    assert report.unreadable == [] and report.exact_duplicates == [] and report.near_duplicates == []
    text = report.render()
    assert "4 of 4 images readable" in text and text.endswith("usable: yes")


def test_counts_per_source_split(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_class_folders(root, {"cat": 3, "dog": 2}, split="train")
    write_class_folders(root, {"cat": 1, "dog": 1}, split="test", seed=50)
    report = _check(root)
    assert report.class_counts == {"test": {"cat": 1, "dog": 1}, "train": {"cat": 3, "dog": 2}}


def test_unreadable_files_are_listed_by_path(two_classes: Path, bad_files) -> None:  # type: ignore[no-untyped-def]
    bad = bad_files(two_classes / "cat")
    report = _check(two_classes)
    assert report.usable  # a few bad files do not make the data unusable
    assert (report.total, report.readable) == (16, 12)
    errors = {u["id"]: u["error"] for u in report.unreadable}
    assert set(errors) == {f"cat/{p.name}" for p in bad.values()}
    assert "decompression bomb" in errors["cat/bomb.png"]
    assert "unreadable: 4" in report.render() and "cat/notes.jpg: not an image" in report.render()


def test_duplicates_and_leakage_across_splits(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_class_folders(root, {"cat": 3, "dog": 3}, split="train", size=(32, 32), ext=".jpg")
    write_class_folders(root, {"cat": 1, "dog": 1}, split="test", size=(32, 32), ext=".jpg", seed=50)
    shutil.copy(root / "train" / "cat" / "000.jpg", root / "test" / "cat" / "copy.jpg")
    photo = make_image((64, 64), seed=9)
    photo.save(root / "train" / "dog" / "hq.jpg", quality=95)
    photo.save(root / "train" / "dog" / "lq.jpg", quality=50)
    report = _check(root)
    assert [sorted(g) for g in report.exact_duplicates] == [["test/cat/copy.jpg", "train/cat/000.jpg"]]
    assert [{d["a"], d["b"]} for d in report.near_duplicates] == [{"train/dog/hq.jpg", "train/dog/lq.jpg"}]
    assert [(d["kind"], {d["a_split"], d["b_split"]}) for d in report.cross_split_duplicates] == [("exact", {"train", "test"})]
    assert report.usable and any("cross the source's splits" in w for w in report.warnings)
    assert "duplicates across splits (leakage): 1" in report.render()


def test_only_one_readable_class_is_unusable(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_class_folders(root, {"cat": 3})
    (root / "dog").mkdir()
    (root / "dog" / "a.jpg").write_text("oops")
    report = _check(root)
    assert not report.usable
    assert any("at least two classes" in p for p in report.problems)
    assert any("'dog' has no readable image" in p for p in report.problems)
    assert report.render().endswith("usable: no")


def test_paired_report_lists_files_without_a_twin(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    for k in range(3):
        write_image(root / "face" / f"{k}.png", seed=k)
    for k in range(2):
        write_image(root / "comics" / f"{k}.png", seed=10 + k)
    write_image(root / "comics" / "9.png", seed=19)
    report = _check(root)
    assert report.unpaired == ["2", "9"] and report.kind == "paired"
    assert "files without a twin: 2" in report.render()


def test_json_report_round_trips(two_classes: Path) -> None:
    data = json.loads(json.dumps(_check(two_classes).to_json()))
    assert data["usable"] is True and data["readable"] == 12 and data["class_counts"]["all"] == {"cat": 6, "dog": 6}


def test_files_left_out_are_counted_by_reason(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_image(root / "cat" / "a.png", (16, 16), seed=1)
    write_image(root / "dog" / "b.png", (16, 16), seed=2)
    (root / "cat" / ".hidden.png").write_bytes((root / "cat" / "a.png").read_bytes())
    (root / "dog" / "README").write_text("no extension")
    (root / "dog" / "labels.txt").write_text("not an image")
    report = _check(root)
    assert report.readable == 2
    assert report.left_out == {"hidden file": 1, "no file extension": 1, "not an image extension": 1}
    assert "left out 3 file(s)" in report.render()
