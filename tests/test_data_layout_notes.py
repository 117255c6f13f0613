"""Layouts a user should hear about: nested class folders, symlinked classes and files, upscaling sizes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _images import write_class_folders, write_image

from tellapart import UserError
from tellapart.autofit import DataProfile, FitConfig, decide
from tellapart.cli import main
from tellapart.data import FolderSource, upscale_note


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _datasets_parent(root: Path) -> Path:
    """A parent of two datasets: ``root/mnist/train/3/*.png`` beside ``root/fashion/train/bag/*.png``."""
    write_class_folders(root / "mnist" / "train", {"3": 4, "7": 4}, size=(12, 12))
    write_class_folders(root / "fashion" / "train", {"bag": 4, "shoe": 4}, size=(12, 12), seed=50)
    return root


# --------------------------------------------------------------------------- nested class folders


def test_a_parent_of_datasets_is_read_with_a_note_naming_a_nested_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _datasets_parent(tmp_path / "all")
    source = FolderSource.open(root)
    assert sorted({i.label for i in source.items()}) == ["fashion", "mnist"]  # accepted, as before
    (note,) = source.layout_notes()
    assert "fashion/train/bag/000.png" in note and "first level" in note and str(root / "fashion") in note

    code, out, _ = _run(capsys, "data", "check", root, "--quiet", "--workers", "1")
    assert code == 0
    assert "note:" in out and "classes are taken from the first level (fashion, mnist)" in out

    code, _, err = _run(capsys, "data", "prepare", root, "--out", tmp_path / "cache", "--size", "12", "--workers", "1")
    assert code == 0 and "classes are taken from the first level" in err and "fashion/train/bag/000.png" in err


def test_plain_and_split_class_folders_get_no_layout_note(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "plain", {"a": 2, "b": 2})
    write_class_folders(tmp_path / "split", {"a": 2, "b": 2}, split="train")
    write_class_folders(tmp_path / "split", {"a": 1, "b": 1}, split="test", seed=9)
    assert FolderSource.open(tmp_path / "plain").layout_notes() == []
    assert FolderSource.open(tmp_path / "split").layout_notes() == []


# --------------------------------------------------------------------------- symlinks


def test_a_class_folder_linking_inside_the_root_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_class_folders(root, {"cat": 3})
    write_class_folders(root / "_store", {"dog": 2}, seed=20)  # a class folder's images kept elsewhere in the dataset
    os.symlink(root / "_store" / "dog", root / "dog", target_is_directory=True)
    counts: dict[str, int] = {}
    for item in FolderSource.open(root).items():
        counts[item.label] = counts.get(item.label, 0) + 1
    assert counts["dog"] == 2 and counts["cat"] == 3


def test_a_class_folder_linking_outside_the_root_is_refused_naming_link_and_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path / "elsewhere" / "dog"
    write_class_folders(tmp_path / "elsewhere", {"dog": 2})
    root = tmp_path / "data"
    write_class_folders(root, {"cat": 2})
    os.symlink(outside, root / "dog", target_is_directory=True)
    with pytest.raises(UserError, match="outside the dataset folder") as err:
        FolderSource.open(root).items()
    assert str(root / "dog") in str(err.value) and str(outside.resolve()) in str(err.value)
    code, _, stderr = _run(capsys, "data", "check", root, "--quiet")
    assert code == 2 and "is a link to" in stderr and "Traceback" not in stderr


def test_an_image_file_linking_outside_is_refused_the_same_way_and_inside_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_class_folders(root, {"cat": 2, "dog": 2})
    os.symlink(root / "cat" / "000.png", root / "dog" / "linked.png")
    assert len(FolderSource.open(root).items()) == 5
    write_image(tmp_path / "far.png")
    os.symlink(tmp_path / "far.png", root / "dog" / "far.png")
    with pytest.raises(UserError, match=r"is a link to .*far\.png, outside the dataset folder"):
        FolderSource.open(root).items()


def test_symlink_loops_are_left_out_and_counted_without_hanging(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_class_folders(root, {"cat": 2, "dog": 2})
    os.symlink(root, root / "cat" / "again", target_is_directory=True)  # back to the root: a loop
    os.symlink(root / "dog" / "self.png", root / "dog" / "self.png")  # a link to itself
    source = FolderSource.open(root)
    assert len(source.items()) == 4
    assert source.left_out()["symlink loop"] == 2


# --------------------------------------------------------------------------- upscaling


def test_the_upscale_rule_names_both_sizes_and_only_fires_past_one_and_a_half() -> None:
    assert upscale_note(42, 28) is None  # exactly 1.5x
    note = upscale_note(64, 28)
    assert note is not None and "64" in note and "28 px" in note and "2.3x" in note


def test_prepare_notes_a_size_that_upscales_most_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "small"
    write_class_folders(root, {"a": 3, "b": 3}, size=(16, 20))
    code, _, err = _run(capsys, "data", "prepare", root, "--out", tmp_path / "big", "--size", "48", "--workers", "1")
    assert code == 0 and "--size 48 upscales the median image (16 px short side) 3.0x" in err
    code, _, err = _run(capsys, "data", "prepare", root, "--out", tmp_path / "same", "--size", "16", "--workers", "1")
    assert code == 0 and "upscales" not in err


def test_fit_states_the_same_upscale_rule_in_its_plan() -> None:
    profile = DataProfile(images=100, sampled=100, median_short_side=16, median_long_side=20, grey_fraction=1.0,
                          class_counts={"a": 50, "b": 50}, has_test_split=False)
    reasons = decide(profile, FitConfig(size=48)).reasons["size"]
    assert upscale_note(48, 16) in reasons
