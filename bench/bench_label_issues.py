"""Benchmark: likely label errors (``find_label_issues``) against labels flipped on purpose.

Ground truth is planted in real images: ``--noise`` (3%) of the images get their label replaced
by another class drawn uniformly at random (seeded); every other label is taken as right. The sets:

  * Fashion-MNIST (``/usr/share/datasets/fashion-mnist``): the first ``--fmnist`` (10,000) train
    images, all in train+val (the source's own test split holds 1,000 clean t10k images);
  * scikit-learn's 8x8 digits (1,797 images, 0-16 scaled to 0-255; prepare carves a test split);
  * the built-in synthetic faces (``tellapart.data.synth_faces``, 600 pairs at 64 px; a flipped
    image is filed in the other class's folder).

Each set is prepared as ``tellapart data prepare`` does, then ``find_label_issues`` (what
``tellapart data issues`` runs) is timed by the method of ``bench/_method.py``: each row is scored
in a fresh process, ``--repeats`` rounds interleaved over the rows (A B C A B C …), and the seconds
are the median (min–max); the quality figures must agree across the rounds. Only flips in the train and val splits count: test rows
are never checked. Precision = flagged rows that were flipped / flagged rows; recall = flipped
rows flagged / flipped rows; P@flips = precision of the ``flips`` lowest-scored rows (how well the
ranking alone does when one reads as many rows as there are errors).

Usage:
    python bench/bench_label_issues.py                          # all three sets, default model
    python bench/bench_label_issues.py --sets fmnist --models logreg hog_logreg mlp --filters both
    python bench/bench_label_issues.py --features efficientnet_lite0   # also a pretrained backbone's features
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tellapart.data import (
    Cache,
    FolderSource,
    IdxSource,
    PrepareConfig,
    Preprocess,
    SynthConfig,
    find_label_issues,
    prepare,
    synth_faces,
)

from _method import Samples, rounds, run_json

FASHION = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Planted:
    """A prepared cache and which of its item ids carry a flipped label."""

    name: str
    cache: Cache
    flipped: frozenset[str]  # item ids whose label was flipped


def _flip(labels: np.ndarray, classes: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``noise`` of them moved to another class (uniformly), and the flipped indices."""
    flipped = np.sort(rng.choice(len(labels), round(noise * len(labels)), replace=False))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    return noisy, flipped


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _read_idx(path: Path, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.open(path).read(), np.uint8, offset=offset)


def _prepare(source_path: Path, source: IdxSource | FolderSource, size: int, grayscale: bool) -> Cache:
    cfg = PrepareConfig(preprocess=Preprocess(size=size, grayscale=grayscale))
    return prepare(source, source_path.parent / f"{source_path.name}-cache", cfg, progress=False)


def fmnist(work: Path, n: int, noise: float, seed: int) -> Planted:
    images = _read_idx(FASHION / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:n]
    labels = _read_idx(FASHION / "train-labels-idx1-ubyte.gz", 8)[:n].astype(np.int64)
    noisy, flipped = _flip(labels, 10, noise, np.random.default_rng(seed))
    root = work / "fmnist"
    root.mkdir(parents=True)
    _write_idx(root / "train-images-idx3-ubyte", images)
    _write_idx(root / "train-labels-idx1-ubyte", noisy)
    _write_idx(root / "t10k-images-idx3-ubyte", _read_idx(FASHION / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:1000])
    _write_idx(root / "t10k-labels-idx1-ubyte", _read_idx(FASHION / "t10k-labels-idx1-ubyte.gz", 8)[:1000])
    cache = _prepare(root, IdxSource.open(root), 28, True)
    return Planted(f"Fashion-MNIST {n:,}", cache, frozenset(f"train/{k}" for k in flipped))


def digits(work: Path, noise: float, seed: int) -> Planted:
    from sklearn.datasets import load_digits

    d = load_digits()
    noisy, flipped = _flip(d.target.astype(np.int64), 10, noise, np.random.default_rng(seed))
    root = work / "digits"
    root.mkdir(parents=True)
    _write_idx(root / "train-images-idx3-ubyte", np.clip(d.images * 16, 0, 255).astype(np.uint8))
    _write_idx(root / "train-labels-idx1-ubyte", noisy)
    cache = _prepare(root, IdxSource.open(root), 8, True)
    return Planted("digits 1,797", cache, frozenset(f"train/{k}" for k in flipped))


def faces(work: Path, noise: float, seed: int) -> Planted:
    root = synth_faces(work / "faces", SynthConfig(pairs=600, size=64, seed=seed), progress=False)
    files = sorted(p.relative_to(root) for p in root.glob("*/*.jpg"))
    rng = np.random.default_rng(seed)
    flipped = set()
    for k in rng.choice(len(files), round(noise * len(files)), replace=False):
        old = files[k]
        other = "comics" if old.parts[0] == "face" else "face"
        new = Path(other) / f"flipped_{old.name}"
        (root / old).rename(root / new)
        flipped.add(str(new))
    cache = _prepare(root, FolderSource.open(root), 64, False)
    return Planted("synthetic faces 1,200", cache, frozenset(flipped))


SETS: dict[str, Callable[[Path, argparse.Namespace], Planted]] = {
    "fmnist": lambda work, a: fmnist(work, a.fmnist, a.noise, a.seed),
    "digits": lambda work, a: digits(work, a.noise, a.seed),
    "faces": lambda work, a: faces(work, a.noise, a.seed),
}


def score(planted: Planted, model: str, filter_by: str, folds: int, max_rows: int, backbone: str | None = None) -> dict:
    """One scoring: flips found, precision, recall, P@flips, seconds (with ``backbone``: its features' extraction included)."""
    cache = planted.cache
    started = time.perf_counter()
    features = None
    if backbone is not None:
        from tellapart.data import IssueFeatures, issue_rows
        from tellapart.train import backbone_features

        rows = issue_rows(cache, max_rows)
        features = IssueFeatures(f"{backbone} features", backbone_features(cache, backbone, rows, progress=False))
    result = find_label_issues(cache, model=model, folds=folds, filter_by=filter_by, max_rows=max_rows, features=features)
    seconds = time.perf_counter() - started
    checked = np.concatenate([cache.indices("train"), cache.indices("val")])
    ids = cache.ids
    flips = {ids[k] for k in checked} & planted.flipped
    flagged = [i.id for i in result.issues]
    hits = len(set(flagged) & flips)
    # the flagged list is ranked by self-confidence: its first `flips` rows are the ranking's top
    top = flagged[: len(flips)]
    return {
        "rows": result.rows_checked,
        "flips": len(flips),
        "model": result.model,
        "flagged": len(flagged),
        "precision": hits / len(flagged) if flagged else float("nan"),
        "recall": hits / len(flips) if flips else float("nan"),
        "at_k": len(set(top) & flips) / len(flips) if len(flagged) >= len(flips) else None,
        "oof": result.out_of_fold_accuracy,
        "seconds": seconds,
    }


def _score_one(spec: dict) -> int:
    """The child process of one repetition: score one (set, model, filter) and print it as JSON."""
    planted = Planted(spec["name"], Cache(spec["cache"]), frozenset(json.loads(Path(spec["flipped"]).read_text())))
    print(json.dumps(score(planted, spec["model"], spec["filter_by"], spec["folds"], spec["max_rows"], spec["backbone"])))
    return 0


def _row(planted: Planted, filter_by: str, runs: list[dict]) -> str:
    """One markdown row: the first run's quality figures, the seconds as median (min–max).

    The rounds compute the same thing with the same seeds; a row whose rounds disagree on what
    they flagged says so with its flagged counts, rather than hiding it behind the first run's.
    """
    first = runs[0]
    quality = ("rows", "flips", "model", "flagged", "precision", "recall", "at_k", "oof")
    if any({k: r[k] for k in quality} != {k: first[k] for k in quality} for r in runs[1:]):
        flagged = "/".join(str(r["flagged"]) for r in runs)
        print(f"note: {planted.name}, {first['model']} {filter_by}: the rounds flagged {flagged} rows; the row shows round 1's figures", file=sys.stderr)
    seconds = Samples("seconds", tuple(r["seconds"] for r in runs))
    spread = f" ({min(seconds.values):.1f}–{max(seconds.values):.1f})" if len(runs) > 1 else ""
    at_k = f"{first['at_k']:.3f}" if first["at_k"] is not None else "—"
    return (
        f"| {planted.name} | {first['rows']:,} | {first['flips']} | {first['model']} | {filter_by} | {first['flagged']} "
        f"| {first['precision']:.3f} | {first['recall']:.3f} | {at_k} | {first['oof']:.3f} | {seconds.median:.1f}{spread} |"
    )


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--score-one":
        return _score_one(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--models", nargs="+", default=["auto"], help="ISSUE_MODELS names, or auto")
    parser.add_argument("--filters", nargs="+", default=["both"], help="cleanlab filter_by rules")
    parser.add_argument("--fmnist", type=int, default=10_000, help="Fashion-MNIST train images (default: 10,000)")
    parser.add_argument("--noise", type=float, default=0.03, help="share of labels flipped (default: 0.03)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-rows", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", metavar="BACKBONE", help="also score the features model on this pretrained backbone's features (e.g. efficientnet_lite0)")
    parser.add_argument("--work", type=Path, help="folder for the sets and caches (default: a temporary one, removed)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved fresh-process scorings of each row (3+); the seconds are their median")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: digits only, 1 round (figures meaningful, seconds one run)")
    args = parser.parse_args()
    n_rounds = rounds(args.repeats, args.smoke)
    sets = ["digits"] if args.smoke else args.sets
    work = args.work or Path(tempfile.mkdtemp(prefix="tellapart-bench-issues-"))
    try:
        print(f"noise {args.noise:.0%}, {args.folds} folds, seed {args.seed}, {n_rounds} interleaved fresh-process round(s) per row\n")
        jobs: list[tuple[Planted, str, list[str]]] = []  # (set, filter, the child's command)
        for name in sets:
            if (work / name).exists():  # the planting writes its flips afresh; never over a folder it did not make now
                raise SystemExit(f"{work / name} already exists (an earlier run's set?): pass another --work, or remove it yourself")
            planted = SETS[name](work / name, args)
            flipped = work / f"{name}-flipped.json"
            flipped.write_text(json.dumps(sorted(planted.flipped)))
            models = [(m, None) for m in args.models] + ([("features", args.features)] if args.features else [])
            for model, backbone in models:
                for filter_by in args.filters:
                    spec = {"name": planted.name, "cache": str(planted.cache.path), "flipped": str(flipped), "model": model,
                            "filter_by": filter_by, "folds": args.folds, "max_rows": args.max_rows, "backbone": backbone}
                    jobs.append((planted, filter_by, [sys.executable, str(Path(__file__).resolve()), "--score-one", json.dumps(spec)]))
        runs: list[list[dict]] = [[] for _ in jobs]
        for round_ in range(1, n_rounds + 1):  # A B C A B C …: a slow spell of the machine lands on every row
            for k, (planted, filter_by, cmd) in enumerate(jobs):
                runs[k].append(run_json(cmd))
                print(f"  round {round_}/{n_rounds} {planted.name} {runs[k][-1]['model']} {filter_by}: {runs[k][-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        print("| set | rows checked | flips | model | filter_by | flagged | precision | recall | P@flips | oof acc | seconds, median (min–max) |")
        print("| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (planted, filter_by, _), row_runs in zip(jobs, runs, strict=True):
            print(_row(planted, filter_by, row_runs), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
