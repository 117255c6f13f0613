"""Stand-in datasets, so that every recipe runs here, where the seeds' own data cannot be fetched.

* ``synthetic_faces``: the built-in faces-vs-comics images (``tellapart data synth``), in the
  Kaggle "comic faces paired" layout, for S0-S2.
* ``fashion_cifar``: real Fashion-MNIST written as CIFAR-10 python batches (``data_batch_1..5``,
  ``test_batch``, ``batches.meta``), each 28x28 grey image padded to 32x32 and repeated over
  three channels, for S3.
* ``fashion_imagenette``: real Fashion-MNIST as an Imagenette-style tree, ``train/<id>/*.png`` and
  ``val/<id>/*.png`` with opaque folder ids and a ``class_map.txt`` of ``<id> <name>`` lines, for S4.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist`` (IDX files under
``/usr/share/datasets/fashion-mnist``). Each maker writes ``tellapart-standin.json`` beside the
data: what it is (shown in the recipe's report) and the options it was made with, so asking again
for the same stand-in reuses the folder.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tellapart._errors import UserError
from tellapart.data import FASHION_MNIST_CLASSES, SynthConfig, idx_files, read_idx, synth_faces

__all__ = [
    "FASHION_MNIST_DIR",
    "MARKER",
    "STANDINS",
    "fashion_mnist_arrays",
    "fashion_mnist_as_cifar",
    "fashion_mnist_as_imagenette",
    "read_marker",
    "synthetic_faces",
    "write_cifar_batches",
]

#: Where the Debian package dataset-fashion-mnist installs the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The file each stand-in maker writes beside its data.
MARKER = "tellapart-standin.json"
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"


def read_marker(data: str | Path) -> dict[str, Any] | None:
    """The stand-in description in a data folder, or None for other data."""
    path = Path(data) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def _begin(out: Path, kind: str, args: Mapping[str, Any]) -> bool:
    """True when ``out`` already holds this very stand-in; refuses a folder holding anything else."""
    marker = read_marker(out)
    if marker is not None and marker.get("kind") == kind and marker.get("args") == json.loads(json.dumps(dict(args))):
        return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; choose a new --out for the stand-in")
    return False


def _finish(out: Path, kind: str, args: Mapping[str, Any], label: str) -> Path:
    (out / MARKER).write_text(json.dumps({"kind": kind, "args": dict(args), "label": label}, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------- synthetic faces


def synthetic_faces(out: str | Path, *, pairs: int = 1200, size: int = 160, seed: int = 0, progress: bool = True) -> Path:
    """The built-in synthetic faces and comics (``face/`` + ``comics/``, pairs by file stem).

    Args:
        out: New or empty folder.
        pairs: Face/comic pairs (twice as many images).
        size: Image side, px.
        seed: The same seed writes the same files.
    """
    out = Path(out)
    args = {"pairs": pairs, "size": size, "seed": seed}
    if _begin(out, "synthetic_faces", args):
        return out
    synth_faces(out, SynthConfig(pairs=pairs, size=size, seed=seed), progress=progress)
    label = f"synthetic stand-in: tellapart's faces vs comics, {2 * pairs:,} images at {size} px"
    return _finish(out, "synthetic_faces", args, label)


# --------------------------------------------------------------------------- Fashion-MNIST


def fashion_mnist_arrays(folder: str | Path | None = None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Fashion-MNIST as ``{"train"|"test": (images [n, 28, 28] uint8, labels [n])}`` and the class names.

    Raises:
        UserError: the IDX files are not there, with the command that installs them.
    """
    path = Path(folder) if folder is not None else FASHION_MNIST_DIR
    files = idx_files(path)
    wanted = [(split, kind) for split in ("train", "t10k") for kind in ("images", "labels")]
    if not all(key in files for key in wanted):
        raise UserError(
            f"Fashion-MNIST not found in {path}: install it with '{INSTALL_HINT}' (Debian package, 31 MB), "
            "or pass the folder of its IDX files with --fashion-mnist DIR"
        )
    arrays = {
        split: (read_idx(files[(prefix, "images")]), read_idx(files[(prefix, "labels")]).astype(np.int64))
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }
    return arrays, list(FASHION_MNIST_CLASSES)


def _stratified(labels: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of about ``n`` items (all when None), the same count from each class, in index order."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    per_class, extra = divmod(n, len(classes))
    picked = []
    for k, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=min(len(idx), per_class + (k < extra)), replace=False))
    return np.sort(np.concatenate(picked))


def _to_rgb32(images: np.ndarray) -> np.ndarray:
    """[n, 28, 28] grey -> [n, 32, 32, 3]: padded by 2 px of black (the background), grey in R, G and B."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)


def write_cifar_batches(
    out: str | Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    label_names: Sequence[str],
    *,
    batches: int = 5,
    source_name: str = "images",
) -> Path:
    """Writes images in the CIFAR-10 python format: ``data_batch_1..N``, ``test_batch``, ``batches.meta``.

    Each batch is a protocol-2 pickle of ``{b"batch_label", b"labels", b"data", b"filenames"}``,
    ``data`` a uint8 array [n, 3072] of the red, green and blue planes, row by row, as the
    originals; they read back with ``pickle.load(f, encoding="bytes")``.

    Args:
        out: Folder to write into.
        train, test: (images [n, 32, 32, 3] uint8, labels [n] in 0..len(label_names)-1).
        label_names: Class names, by label.
        batches: Training batches to split train into.
        source_name: Stem of the ``filenames`` entries.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for what, (images, _labels) in (("train", train), ("test", test)):
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
            raise UserError(f"CIFAR {what} images must be uint8 [n, 32, 32, 3], got {images.dtype} {list(images.shape)}")

    def dump(name: str, batch_label: str, images: np.ndarray, labels: np.ndarray, offset: int) -> None:
        data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))
        batch = {
            b"batch_label": batch_label.encode(),
            b"labels": [int(v) for v in labels],
            b"data": data,
            b"filenames": [f"{source_name}_{offset + k:05d}.png".encode() for k in range(len(images))],
        }
        with open(out / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)

    images, labels = train
    for k, part in enumerate(np.array_split(np.arange(len(images)), batches), 1):
        dump(f"data_batch_{k}", f"training batch {k} of {batches}", images[part], labels[part], int(part[0]) if len(part) else 0)
    dump("test_batch", "testing batch 1 of 1", test[0], test[1], 0)
    per_batch = -(-len(images) // batches)
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in label_names], b"num_vis": 3072}
    with open(out / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return out


def fashion_mnist_as_cifar(
    out: str | Path,
    *,
    train: int | None = 10000,
    test: int | None = 2000,
    seed: int = 0,
    fashion_mnist: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Real Fashion-MNIST written as CIFAR-10 python batches (28x28 grey -> 32x32x3).

    Args:
        out: New or empty folder (``tellapart data prepare OUT`` reads it as kind cifar).
        train, test: Images kept from each split, the same number per class; None keeps all
            (60,000 and 10,000).
        seed: Which images are kept.
        fashion_mnist: Folder of the IDX files (default: the Debian package's).
    """
    out = Path(out)
    args = {"train": train, "test": test, "seed": seed}
    if _begin(out, "fashion_cifar", args):
        return out
    arrays, names = fashion_mnist_arrays(fashion_mnist)
    rng = np.random.default_rng(seed)
    kept = {}
    for split, n in (("train", train), ("test", test)):
        images, labels = arrays[split]
        idx = _stratified(labels, n, rng)
        kept[split] = (_to_rgb32(images[idx]), labels[idx])
    write_cifar_batches(out, kept["train"], kept["test"], names, source_name="fashion_mnist")
    label = (
        f"real Fashion-MNIST as CIFAR-10 batches: {len(kept['train'][1]):,} train + {len(kept['test'][1]):,} test images, "
        "28x28 grey padded to 32x32x3"
    )
    return _finish(out, "fashion_cifar", args, label)


def fashion_mnist_as_imagenette(
    out: str | Path,
    *,
    train: int | None = 3000,
    val: int | None = 1000,
    size: int = 28,
    seed: int = 0,
    fashion_mnist: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Real Fashion-MNIST as an Imagenette-style tree: ``train/<id>/*.png``, ``val/<id>/*.png``, ``class_map.txt``.

    Folder ids are opaque (``fm00`` .. ``fm09``), as Imagenette's WordNet ids are; ``class_map.txt``
    maps them to the class names (``tellapart data prepare OUT --class-map OUT/class_map.txt``).
    Images are RGB PNGs (grey in every channel). ``val`` is drawn from Fashion-MNIST's test split.

    Args:
        out: New or empty folder.
        train, val: Images per split, the same number per class; None keeps all.
        size: Side of the written images, px (28 keeps the originals; larger upsamples bilinearly).
        seed: Which images are kept.
        fashion_mnist: Folder of the IDX files (default: the Debian package's).
    """
    from tqdm import tqdm

    out = Path(out)
    args = {"train": train, "val": val, "size": size, "seed": seed}
    if _begin(out, "fashion_imagenette", args):
        return out
    if not isinstance(size, int) or size < 8:
        raise UserError(f"stand-in size must be at least 8 px, got {size!r}")
    arrays, names = fashion_mnist_arrays(fashion_mnist)
    ids = [f"fm{k:02d}" for k in range(len(names))]
    rng = np.random.default_rng(seed)
    counts = {}
    for split, source_split, n in (("train", "train", train), ("val", "test", val)):
        images, labels = arrays[source_split]
        idx = _stratified(labels, n, rng)
        for k in tqdm(idx, desc=f"stand-in {split}", unit="img", disable=not progress):
            img = Image.fromarray(images[k]).convert("RGB")
            if size != img.width:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            folder = out / split / ids[labels[k]]
            folder.mkdir(parents=True, exist_ok=True)  # only classes with images get a folder
            img.save(folder / f"{source_split}_{k:05d}.png")
        counts[split] = len(idx)
    (out / "class_map.txt").write_text("".join(f"{i} {n}\n" for i, n in zip(ids, names)))
    label = (
        f"real Fashion-MNIST in the Imagenette layout: {counts['train']:,} train + {counts['val']:,} val images, "
        f"{size}x{size} RGB PNGs"
    )
    return _finish(out, "fashion_imagenette", args, label)


#: Stand-in makers by the name a recipe's ``standin.kind`` uses; each takes ``out`` and keyword options.
STANDINS: dict[str, Callable[..., Path]] = {
    "synthetic_faces": synthetic_faces,
    "fashion_cifar": fashion_mnist_as_cifar,
    "fashion_imagenette": fashion_mnist_as_imagenette,
}
