"""Benchmark: the seed's 27-model S1 grid searched two ways, full grid vs successive halving over data.

Both sides are ``tellapart tune`` on the same cache and validation split, one after the other:

* **full grid** — every one of the 27 configurations (conv layers {1,2,3} x width {32,64,128} x
  dense layers {0,1,2}, Adam 1e-3, batch 32, one sigmoid output for binary data) trains 10
  epochs on the whole training split, as the seed's round 1 did on its subset;
* **successive halving** — Optuna's SuccessiveHalvingPruner (reduction factor 3) over nested,
  stratified training subsets: every configuration trains on 1/9 of train, the promoted third
  continue from their weights on 1/3, and the promoted third of those on all of it
  (``--rung-epochs``: epochs at each rung). ``--pruner successive_halving`` is Optuna's
  asynchronous rule (a trial is promoted when in the top third of those that reached its rung so
  far, so early trials are promoted more often); ``--pruner synchronous_halving`` runs whole
  rounds (all 27, then the best 9 of them, then the best 3).

Compute is the sum of images processed by training (every epoch of every rung of every trial,
from each trial's run summary). Quality is the best complete trial's validation accuracy.

Datasets: the built-in synthetic faces (grayscale, ``--size`` px) and a stratified subset of
real Fashion-MNIST (28 px, ``--fmnist-train`` training images; ``apt-get install
dataset-fashion-mnist``).

Usage:
    .venv/bin/python bench/bench_halving.py --work /tmp/bh [--data faces fmnist] [--pruner synchronous_halving]
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tellapart.recipes._standins import fashion_mnist_arrays

TELLAPART = [sys.executable, "-m", "tellapart.cli"]

GRID = """
base:
  model: {name: grid_cnn}
  optim: {name: adam, lr: 1.0e-3}
  epochs: 10
  batch_size: 32
  single_logit: true
space:
  model.args.conv_layers: {type: int, low: 1, high: 3}
  model.args.width: {type: categorical, choices: [32, 64, 128]}
  model.args.dense_layers: {type: int, low: 0, high: 2}
sampler: {name: grid, seed: 0}
metric: val_acc
"""

FULL = GRID + "pruner: {name: none}\nfidelity: {kind: none}\n"


def halving_space(fractions: list[float], epochs: list[int], pruner: str) -> str:
    options = "min_resource: 1, reduction_factor: 3" if pruner == "successive_halving" else "reduction_factor: 3"
    return GRID + (
        f"pruner: {{name: {pruner}, {options}}}\n"
        f"fidelity: {{kind: data, fractions: {fractions}, epochs: {epochs}}}\n"
    )


def sh(cmd: list[str]) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def faces_cache(work: Path, pairs: int, size: int) -> Path:
    cache = work / f"faces-{pairs}-{size}"
    if not (cache / "manifest.json").is_file():
        sh(TELLAPART + ["data", "synth", "--out", str(work / f"faces-src-{pairs}"), "--pairs", str(pairs), "--size", "160", "--quiet"])
        sh(TELLAPART + ["data", "prepare", str(work / f"faces-src-{pairs}"), "--out", str(cache), "--size", str(size), "--grayscale", "--quiet"])
    return cache


def _write_idx(path: Path, array: np.ndarray) -> None:
    dtype_code = 0x08  # unsigned byte
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes(), compresslevel=1))


def fmnist_cache(work: Path, n_train: int) -> Path:
    """A stratified subset of Fashion-MNIST's train set as IDX files; its 10k test set stays the test split."""
    cache = work / f"fmnist-{n_train}"
    if (cache / "manifest.json").is_file():
        return cache
    arrays, _ = fashion_mnist_arrays()
    images, labels = arrays["train"]
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), n_train // 10, replace=False) for c in range(10)]))
    src = work / f"fmnist-src-{n_train}"
    src.mkdir(parents=True, exist_ok=True)
    _write_idx(src / "train-images-idx3-ubyte.gz", images[keep])
    _write_idx(src / "train-labels-idx1-ubyte.gz", labels[keep])
    _write_idx(src / "t10k-images-idx3-ubyte.gz", arrays["test"][0])
    _write_idx(src / "t10k-labels-idx1-ubyte.gz", arrays["test"][1])
    sh(TELLAPART + ["data", "prepare", str(src), "--kind", "idx", "--out", str(cache), "--size", "28", "--grayscale", "--quiet"])
    return cache


def run_study(cache: Path, space_text: str, out: Path) -> dict[str, Any]:
    space = out.with_suffix(".yaml")
    space.write_text(space_text)
    t0 = time.perf_counter()
    if not (out / "leaderboard.json").is_file():
        sh(TELLAPART + ["tune", str(cache), "--space", str(space), "--out", str(out), "--quiet"])
    wall = time.perf_counter() - t0
    rows = json.loads((out / "leaderboard.json").read_text())
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: (r["val_acc"], -r["trial"]))
    return {
        "trials": len(rows),
        "complete": len(complete),
        "best_trial": best["trial"],
        "best_params": best.get("params"),
        "best_val_acc": best["val_acc"],
        "images_processed": int(sum(r.get("images_processed") or 0 for r in rows)),
        "train_seconds": round(sum(r.get("train_seconds") or 0.0 for r in rows), 1),
        "wall_seconds": round(wall, 1),
        "rungs_reached": _rungs_reached(rows),
    }


def _rungs_reached(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many trials ended at each training fraction."""
    out: dict[str, int] = {}
    for r in rows:
        key = str(r.get("fraction"))
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for caches and studies (reused when present)")
    parser.add_argument("--data", nargs="+", default=["faces", "fmnist"], choices=["faces", "fmnist"])
    parser.add_argument("--faces-pairs", type=int, default=1500, help="synthetic face/comic pairs (2 images each)")
    parser.add_argument("--size", type=int, default=64, help="faces: side in pixels (the seed used 150)")
    parser.add_argument("--fmnist-train", type=int, default=6000, help="Fashion-MNIST training images (stratified)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1 / 9, 1 / 3, 1.0])
    parser.add_argument("--rung-epochs", type=int, nargs="+", default=[3, 3, 4])
    parser.add_argument("--pruner", default="successive_halving", choices=["successive_halving", "synchronous_halving"],
                        help="Optuna's asynchronous pruner, or whole rounds (default: successive_halving)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    fractions = [round(f, 4) for f in args.fractions]
    results = {}
    for data in args.data:
        cache = faces_cache(args.work, args.faces_pairs, args.size) if data == "faces" else fmnist_cache(args.work, args.fmnist_train)
        full = run_study(cache, FULL, args.work / f"{data}-full")
        schedule = "-".join(map(str, args.rung_epochs))
        kind = "halving" if args.pruner == "successive_halving" else "sync-halving"
        halving = run_study(cache, halving_space(fractions, args.rung_epochs, args.pruner), args.work / f"{data}-{kind}-{schedule}")
        results[data] = {
            "cache": str(cache),
            "full_grid": full,
            "successive_halving": halving,
            "rungs": {"fractions": fractions, "epochs": args.rung_epochs},
            "pruner": args.pruner,
            "compute_ratio": round(halving["images_processed"] / full["images_processed"], 3),
            "val_acc_gap_pp": round(100 * (full["best_val_acc"] - halving["best_val_acc"]), 3),
        }
        print(json.dumps({data: results[data]}, indent=2), flush=True)
    (args.work / f"results-{kind}-{schedule}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
