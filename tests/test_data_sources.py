"""Every source format lists the right items, hands over readable payloads, and is auto-detected."""

from __future__ import annotations

import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _images import make_image, write_cifar_batch, write_class_folders, write_idx, write_image

from tellapart._errors import UserError
from tellapart.data import Preprocess, decode, open_source
from tellapart.data._sources import FASHION_MNIST_CLASSES


def _labels(source) -> dict[str, int]:  # type: ignore[no-untyped-def]
    counts: dict[str, int] = {}
    for item in source.items():
        counts[item.label] = counts.get(item.label, 0) + 1
    return counts


def _decoded(source, size: int = 8) -> list:  # type: ignore[no-untyped-def]
    items = source.items()
    out = [decode(p, Preprocess(size=size)) for p in source.payloads(items)]
    assert len(out) == len(items)
    return out


# --------------------------------------------------------------------------- class folders


def test_class_folders_give_one_class_per_folder(two_classes: Path) -> None:
    (two_classes / "cat" / "readme.txt").write_text("not an image")
    (two_classes / "dog" / ".hidden.png").write_bytes(b"")
    source = open_source(two_classes)
    assert source.kind == "folder"
    assert _labels(source) == {"cat": 6, "dog": 6}
    assert all(item.split is None and item.group is None for item in source.items())
    assert all(d.error is None for d in _decoded(source))


def test_class_folders_under_split_folders_keep_their_split(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_class_folders(root, {"cat": 3, "dog": 2}, split="train")
    write_class_folders(root, {"cat": 1, "dog": 1}, split="validation")
    write_class_folders(root, {"cat": 1, "dog": 2}, split="test")
    (root / "train" / ".ipynb_checkpoints").mkdir()  # Jupyter litter is not an empty class
    items = open_source(root).items()
    by_split = {s: sorted(i.label for i in items if i.split == s) for s in ("train", "val", "test")}
    assert by_split == {"train": ["cat"] * 3 + ["dog"] * 2, "val": ["cat", "dog"], "test": ["cat", "dog", "dog"]}


@pytest.mark.parametrize("form", ["json", "txt"])
def test_class_map_renames_folder_ids(tmp_path: Path, form: str) -> None:
    root = tmp_path / "imagenette"
    write_class_folders(root, {"n01440764": 2, "n02102040": 2}, split="train")
    write_class_folders(root, {"n01440764": 1, "n02102040": 1}, split="val")
    mapping = tmp_path / f"classes.{form}"
    if form == "json":
        mapping.write_text(json.dumps({"n01440764": "tench", "n02102040": "English springer"}))
    else:
        mapping.write_text("# imagenette\nn01440764 tench\nn02102040 English springer\n")
    source = open_source(root, class_map=mapping)
    assert _labels(source) == {"tench": 3, "English springer": 3}


def test_bad_class_map_line_is_named(tmp_path: Path, two_classes: Path) -> None:
    mapping = tmp_path / "classes.txt"
    mapping.write_text("cat kitty\njustonefield\n")
    with pytest.raises(UserError, match=r"classes.txt:2"):
        open_source(two_classes, class_map=mapping)


def test_empty_class_folder_is_named(two_classes: Path) -> None:
    (two_classes / "bird").mkdir()
    with pytest.raises(UserError, match=r"bird holds no images"):
        open_source(two_classes).items()


def test_image_outside_any_class_folder_is_refused(two_classes: Path) -> None:
    write_image(two_classes / "stray.png")
    with pytest.raises(UserError, match="stray.png"):
        open_source(two_classes).items()


def test_folder_without_images_says_so(tmp_path: Path) -> None:
    (tmp_path / "ds" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="no image files found"):
        open_source(tmp_path / "ds").items()


def test_missing_dataset_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nowhere"):
        open_source(tmp_path / "nowhere")


# --------------------------------------------------------------------------- CSV / TSV lists


def test_csv_with_header_group_and_split(tmp_path: Path) -> None:
    for k in range(4):
        write_image(tmp_path / "img" / f"{k}.png", seed=k)
    (tmp_path / "list.csv").write_text(
        "path,label,group,split\nimg/0.png,cat,p1,train\nimg/1.png,dog,p1,train\nimg/2.png,cat,,test\nimg/3.png,dog,,Validation\n"
    )
    source = open_source(tmp_path / "list.csv")
    assert source.kind == "csv"
    items = source.items()
    assert [(i.id, i.label, i.group, i.split) for i in items] == [
        ("img/0.png", "cat", "p1", "train"),
        ("img/1.png", "dog", "p1", "train"),
        ("img/2.png", "cat", None, "test"),
        ("img/3.png", "dog", None, "val"),
    ]
    assert all(d.error is None for d in _decoded(source))


def test_csv_without_header_and_columns_in_any_order(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png", seed=1)
    (tmp_path / "plain.csv").write_text("a.png,cat\nb.png,dog\n")
    assert [(i.id, i.label) for i in open_source(tmp_path / "plain.csv").items()] == [("a.png", "cat"), ("b.png", "dog")]
    (tmp_path / "reordered.csv").write_text("label,path\ncat,a.png\ndog,b.png\n")
    assert [(i.id, i.label) for i in open_source(tmp_path / "reordered.csv").items()] == [("a.png", "cat"), ("b.png", "dog")]


def test_tsv_list_and_root_option(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "x" / "a.png")
    write_image(tmp_path / "images" / "y" / "b.png", seed=1)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "all.tsv").write_text("path\tlabel\tsplit\nx/a.png\tcat\ttrain\ny/b.png\tdog\ttest\n")
    source = open_source(lists / "all.tsv", root=tmp_path / "images")
    assert [(i.label, i.split) for i in source.items()] == [("cat", "train"), ("dog", "test")]
    assert all(d.error is None for d in _decoded(source))


def test_csv_path_outside_root_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "x.jpg")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "list.csv").write_text("a.jpg,cat\n../x.jpg,dog\n")
    with pytest.raises(UserError, match=r"'\.\./x\.jpg' lies outside"):
        open_source(tmp_path / "ds" / "list.csv")


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "split.csv").write_text("path,label,group,split\na.png,cat,,train\nb.png,dog,,holdout\n")
    with pytest.raises(UserError, match=r"split.csv:3: unknown split 'holdout'"):
        open_source(tmp_path / "split.csv")
    (tmp_path / "columns.csv").write_text("path,label,weight\na.png,cat,1\n")
    with pytest.raises(UserError, match=r"unknown column\(s\) \['weight'\]"):
        open_source(tmp_path / "columns.csv")
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(UserError, match="empty"):
        open_source(tmp_path / "empty.csv")


# --------------------------------------------------------------------------- archives


def _zip_folder(folder: Path, out: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, prefix + f.relative_to(folder).as_posix())
    return out


def _tar_folder(folder: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder, arcname=arcname)
    return out


@pytest.mark.parametrize("splits", [False, True], ids=["classes", "split-folders"])
@pytest.mark.parametrize(
    ("fmt", "top"),
    [("zip", ""), ("zip", "dataset/"), ("tar.gz", "dataset"), ("tar.gz", "./dataset")],
    ids=["zip", "zip-in-folder", "tgz-in-folder", "tgz-dot-slash"],
)
def test_archive_of_class_folders_is_read_in_place(tmp_path: Path, fmt: str, top: str, splits: bool) -> None:
    data = tmp_path / "src"
    write_class_folders(data, {"cat": 3, "dog": 2}, split="train" if splits else None)
    if splits:
        write_class_folders(data, {"cat": 1, "dog": 1}, split="test", seed=50)
    (data / "LICENSE.txt").write_text("CC0")
    store = tmp_path / "store"
    store.mkdir()
    archive = store / f"data.{fmt}"
    if fmt == "zip":
        _zip_folder(data, archive, top)
    else:
        _tar_folder(data, archive, top)
    before = sorted(os.listdir(store))

    source = open_source(archive)
    assert source.kind == "archive"
    items = source.items()
    expected = [("train", "cat")] * 3 + [("train", "dog")] * 2 + [("test", "cat"), ("test", "dog")]
    if not splits:
        expected = [(None, "cat")] * 3 + [(None, "dog")] * 2
    assert sorted((i.split, i.label) for i in items) == sorted(expected, key=str)
    decoded = _decoded(source)
    assert all(d.error is None and d.format == "PNG" for d in decoded)
    for item, d in zip(items, decoded):  # the same pixels as the loose file
        assert not item.id.startswith(("./", "dataset/"))
        assert np.array_equal(d.pixels, decode(str(data / item.id), Preprocess(size=8)).pixels)
    assert sorted(os.listdir(store)) == before  # nothing extracted next to the archive


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_archive_of_csv_list(tmp_path: Path, fmt: str) -> None:
    data = tmp_path / "src"
    for k in range(4):
        write_image(data / "images" / f"{k}.png", seed=k)
    (data / "labels.csv").write_text("path,label,split\nimages/3.png,dog,test\nimages/0.png,cat,train\nimages/1.png,dog,train\n")
    store = tmp_path / "store"
    store.mkdir()
    archive = store / f"data.{fmt}"
    _zip_folder(data, archive, "kaggle/") if fmt == "zip" else _tar_folder(data, archive, "kaggle")

    source = open_source(archive)
    items = source.items()
    assert sorted((i.id, i.label, i.split) for i in items) == [
        ("images/0.png", "cat", "train"),
        ("images/1.png", "dog", "train"),
        ("images/3.png", "dog", "test"),
    ]
    decoded = _decoded(source)
    for item, d in zip(items, decoded):
        assert np.array_equal(d.pixels, decode(str(data / item.id), Preprocess(size=8)).pixels)
    assert os.listdir(store) == [archive.name]


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_archive_csv_naming_one_member_twice(tmp_path: Path, fmt: str) -> None:
    data = tmp_path / "src"
    write_image(data / "a.png")
    write_image(data / "b.png", seed=1)
    (data / "labels.csv").write_text("path,label\na.png,cat\nb.png,dog\n./a.png,dog\n")
    archive = tmp_path / f"data.{fmt}"
    _zip_folder(data, archive) if fmt == "zip" else _tar_folder(data, archive, "src")
    source = open_source(archive)
    decoded = _decoded(source)
    assert len(decoded) == 3 and all(d.error is None for d in decoded)
    assert decoded[0].content_hash == decoded[1].content_hash  # the same file, listed twice


def test_archive_csv_naming_a_missing_member(tmp_path: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("labels.csv", "a.png,cat\ngone.png,dog\n")
        zf.writestr("a.png", make_image().tobytes())
    with pytest.raises(UserError, match="'gone.png' is not in the archive"):
        open_source(archive).items()


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_archive_member_escaping_with_dotdot_is_refused(tmp_path: Path, fmt: str) -> None:
    png = tmp_path / "a.png"
    write_image(png)
    archive = tmp_path / f"evil.{fmt}"
    if fmt == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(png, "cat/a.png")
            zf.write(png, "../dog/b.png")
    else:
        with tarfile.open(archive, "w") as tf:
            tf.add(png, "cat/a.png")
            tf.add(png, "../dog/b.png")
    with pytest.raises(UserError, match=r"'\.\./dog/b\.png' points outside the archive"):
        open_source(archive).items()
    assert not (tmp_path.parent / "dog").exists()


def test_text_file_posing_as_dataset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(UserError, match="not a dataset file"):
        open_source(tmp_path / "notes.md")


# --------------------------------------------------------------------------- paired (comic faces)


def _paired(root: Path, pairs: int, *, extra_face: int = 0) -> Path:
    for k in range(pairs + extra_face):
        write_image(root / "face" / f"{k}.jpg", seed=k)
        if k < pairs:
            write_image(root / "comics" / f"{k}.jpg", seed=500 + k)
    return root


@pytest.mark.parametrize("nesting", ["", "face2comics/face2comics_v2.0.0_by_Sxela"], ids=["flat", "kaggle-nested"])
def test_paired_layout_groups_twins_by_stem(tmp_path: Path, nesting: str) -> None:
    top = tmp_path / "comic-faces"
    _paired(top / nesting if nesting else top, 4, extra_face=1)
    source = open_source(top)
    assert source.kind == "paired"
    items = source.items()
    assert _labels(source) == {"face": 5, "comics": 4}
    by_group: dict[str, set[str]] = {}
    for item in items:
        by_group.setdefault(str(item.group), set()).add(item.label)
        assert (top / item.id).is_file()  # ids resolve from the folder the user named
    assert by_group["0"] == {"face", "comics"}
    assert source.unpaired() == ["4"]  # type: ignore[attr-defined]
    assert all(d.error is None for d in _decoded(source))


def test_paired_layout_with_custom_folder_names(tmp_path: Path) -> None:
    for k in range(2):
        write_image(tmp_path / "ds" / "photo" / f"{k}.png", seed=k)
        write_image(tmp_path / "ds" / "sketch" / f"{k}.png", seed=10 + k)
    source = open_source(tmp_path / "ds", pair_dirs=("photo", "sketch"))
    assert source.kind == "paired"
    assert _labels(source) == {"photo": 2, "sketch": 2}
    with pytest.raises(UserError, match="--pair-dirs"):
        open_source(tmp_path / "ds", kind="paired")


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def _mnist(folder: Path, *, compress: bool, n_train: int = 5, n_test: int = 3, names: str = "{split}-{kind}-idx{d}-ubyte") -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(folder / (names.format(split=split, kind="images", d=3) + suffix), images, compress=compress)
        write_idx(folder / (names.format(split=split, kind="labels", d=1) + suffix), labels, compress=compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_idx_files_give_train_and_test(tmp_path: Path, compress: bool) -> None:
    arrays = _mnist(tmp_path / "mnist", compress=compress)
    source = open_source(tmp_path / "mnist")
    assert source.kind == "idx"
    items = source.items()
    assert [i.split for i in items] == ["train"] * 5 + ["test"] * 3
    assert [i.label for i in items[:5]] == ["0", "1", "2", "3", "4"]
    decoded = [decode(p, Preprocess(size=28, grayscale=True)) for p in source.payloads(items)]
    assert decoded[6].mode == "L" and decoded[6].format == "array"
    assert np.array_equal(decoded[6].pixels[:, :, 0], arrays["t10k"][0][1])


def test_fashion_mnist_gets_its_class_names(tmp_path: Path) -> None:
    _mnist(tmp_path / "fashion-mnist", compress=True, n_train=10)
    labels = [i.label for i in open_source(tmp_path / "fashion-mnist").items()]
    assert labels[:10] == list(FASHION_MNIST_CLASSES)
    assert "Ankle boot" in labels and "9" not in labels


def test_idx_with_kaggle_file_names_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    _mnist(folder, compress=False, names="{split}-{kind}.idx{d}-ubyte")
    (folder / "train-images-idx3-ubyte").mkdir()  # Kaggle ships folders named like the files
    (folder / "train-images-idx3-ubyte" / "train-images-idx3-ubyte").write_bytes(b"")
    source = open_source(folder)
    assert source.kind == "idx"
    assert len(source.items()) == 8


def test_idx_rewritten_is_read_again(tmp_path: Path) -> None:
    _mnist(tmp_path / "mnist", compress=False, n_train=5)
    assert len(open_source(tmp_path / "mnist").items()) == 8
    _mnist(tmp_path / "mnist", compress=False, n_train=7)
    assert len(open_source(tmp_path / "mnist").items()) == 10


def test_truncated_idx_is_reported(tmp_path: Path) -> None:
    _mnist(tmp_path / "mnist", compress=False)
    f = tmp_path / "mnist" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(UserError, match="train-images-idx3-ubyte is truncated"):
        open_source(tmp_path / "mnist").items()


# --------------------------------------------------------------------------- CIFAR


def _cifar10(folder: Path, *, protocol: int = 2) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    write_cifar_batch(folder / "data_batch_1", images[:3], [0, 1, 2], protocol=protocol)
    write_cifar_batch(folder / "data_batch_2", images[3:5], [3, 9], protocol=protocol)
    write_cifar_batch(folder / "test_batch", images[5:], [1], protocol=protocol)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=protocol))
    return images


def test_cifar10_folder(tmp_path: Path) -> None:
    images = _cifar10(tmp_path / "cifar-10-batches-py")
    source = open_source(tmp_path)  # the folder that holds cifar-10-batches-py
    assert source.kind == "cifar"
    items = source.items()
    assert [(i.label, i.split) for i in items] == [
        ("airplane", "train"), ("automobile", "train"), ("bird", "train"),
        ("cat", "train"), ("truck", "train"), ("automobile", "test"),
    ]  # fmt: skip
    decoded = [decode(p, Preprocess(size=32)) for p in source.payloads(items)]
    assert all(np.array_equal(d.pixels, img) for d, img in zip(decoded, images))  # CHW rows -> HWC pixels


def test_cifar10_tar_gz_as_downloaded(tmp_path: Path) -> None:
    images = _cifar10(tmp_path / "build" / "cifar-10-batches-py", protocol=5)
    archive = tmp_path / "cifar-10-python.tar.gz"
    _tar_folder(tmp_path / "build" / "cifar-10-batches-py", archive, "cifar-10-batches-py")
    source = open_source(archive)
    assert source.kind == "cifar"
    items = source.items()
    assert len(items) == 6 and items[-1].split == "test" and items[0].label == "airplane"
    decoded = [decode(p, Preprocess(size=32)) for p in source.payloads(items)]
    assert np.array_equal(decoded[4].pixels, images[4])


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    write_cifar_batch(folder / "train", rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), [0, 99, 5], key=b"fine_labels")
    write_cifar_batch(folder / "test", rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), [99], key=b"fine_labels")
    fine = [f"class{k}".encode() for k in range(99)] + [b"worm"]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": fine, b"coarse_label_names": [b"x"] * 20}, protocol=2))
    source = open_source(folder)
    assert source.kind == "cifar"
    assert [(i.label, i.split) for i in source.items()] == [("class0", "train"), ("worm", "train"), ("class5", "train"), ("worm", "test")]


def test_cifar_pickle_cannot_run_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("touch pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(UserError, match="refusing to load"):
        open_source(tmp_path).items()
    assert not Path("pwned").exists()


# --------------------------------------------------------------------------- detection


def test_auto_detection_picks_each_kind(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "folder", {"a": 1, "b": 1})
    _paired(tmp_path / "paired" / "inner", 1)
    _mnist(tmp_path / "idx", compress=True)
    _cifar10(tmp_path / "cifar")
    (tmp_path / "list.tsv").write_text("a.png\tx\n")
    _zip_folder(tmp_path / "folder", tmp_path / "data.zip")
    _tar_folder(tmp_path / "folder", tmp_path / "data.tar.gz", "data")
    expected = {
        "folder": "folder", "paired": "paired", "idx": "idx", "cifar": "cifar",
        "list.tsv": "csv", "data.zip": "archive", "data.tar.gz": "archive",
    }  # fmt: skip
    assert {name: open_source(tmp_path / name).kind for name in expected} == expected


def test_fingerprint_changes_when_a_file_changes(two_classes: Path) -> None:
    before = open_source(two_classes).fingerprint()
    assert open_source(two_classes).fingerprint() == before
    target = two_classes / "cat" / "000.png"
    write_image(target, seed=1234)
    os.utime(target, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    assert open_source(two_classes).fingerprint() != before
