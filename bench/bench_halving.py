"""Benchmark: the seed's 27-model S1 grid searched two ways, full grid vs successive halving over data.

Both sides are ``tellapart tune`` on the same cache and validation split:

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

The method (bench/_method.py): each study is a fresh ``tellapart tune`` process into a new folder
(studies are never resumed; caches are reused); the sides interleave (full grid, halving, full
grid, …) for ``--repeats`` rounds, round r training with seed r (the grid order stays fixed).
Printed per side: median and min–max of the best validation accuracy, images processed and
whole-process wall time, and the ratios of medians (halving / full grid).

Reproduce (alone on the machine):
    .venv/bin/python bench/bench_halving.py --work /tmp/bh --data faces fmnist --repeats 3 [--pruner synchronous_halving]
Check that it runs (a tiny grid on a few faces, one round; figures meaningless):
    .venv/bin/python bench/bench_halving.py --work /tmp/bh-smoke --smoke
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _method import (
    interleaved_figures,
    markdown_table,
    ratio_of_medians,
    rounds,
    run_timed,
)

from tellapart.recipes import fashion_mnist_arrays

TELLAPART = [sys.executable, "-m", "tellapart.cli"]


def grid(seed: int, smoke: bool = False) -> str:
    """The seed's S1 grid as a tune space, with training seed ``seed``; ``smoke``: 3 configurations, 1 epoch."""
    conv_high, widths, epochs = (1, [32], 1) if smoke else (3, [32, 64, 128], 10)
    return f"""
base:
  model: {{name: grid_cnn}}
  optim: {{name: adam, lr: 1.0e-3}}
  epochs: {epochs}
  batch_size: 32
  single_logit: true
  seed: {seed}
space:
  model.args.conv_layers: {{type: int, low: 1, high: {conv_high}}}
  model.args.width: {{type: categorical, choices: {widths}}}
  model.args.dense_layers: {{type: int, low: 0, high: 2}}
sampler: {{name: grid, seed: 0}}
metric: val_acc
"""


def full_space(grid_text: str) -> str:
    return grid_text + "pruner: {name: none}\nfidelity: {kind: none}\n"


def halving_space(grid_text: str, fractions: list[float], epochs: list[int], pruner: str) -> str:
    options = "min_resource: 1, reduction_factor: 3" if pruner == "successive_halving" else "reduction_factor: 3"
    return grid_text + (
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


def run_study(cache: Path, space_text: str, out: Path) -> dict[str, float]:
    """One fresh ``tellapart tune`` process into an emptied ``out``: its figures and whole wall seconds."""
    shutil.rmtree(out, ignore_errors=True)  # a fresh study each repetition, never a resume
    out.parent.mkdir(parents=True, exist_ok=True)
    space = out.with_suffix(".yaml")
    space.write_text(space_text)
    cmd = TELLAPART + ["tune", str(cache), "--space", str(space), "--out", str(out), "--quiet"]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    wall = run_timed(cmd)
    rows = json.loads((out / "leaderboard.json").read_text())
    complete = [r for r in rows if r["state"] == "complete"]
    best = max(complete, key=lambda r: (r["val_acc"], -r["trial"]))
    (out / "bench.json").write_text(json.dumps({"best_trial": best["trial"], "best_params": best.get("params"), "rungs_reached": _rungs_reached(rows)}))
    return {
        "best val acc": best["val_acc"],
        "images processed": int(sum(r.get("images_processed") or 0 for r in rows)),
        "train s": sum(r.get("train_seconds") or 0.0 for r in rows),
        "wall s": wall,
        "trials": len(rows),
        "complete": len(complete),
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
    parser.add_argument("--work", type=Path, required=True, help="folder for caches (reused when present) and studies (made afresh)")
    parser.add_argument("--data", nargs="+", default=["faces", "fmnist"], choices=["faces", "fmnist"])
    parser.add_argument("--faces-pairs", type=int, default=1500, help="synthetic face/comic pairs (2 images each)")
    parser.add_argument("--size", type=int, default=64, help="faces: side in pixels (the seed used 150)")
    parser.add_argument("--fmnist-train", type=int, default=6000, help="Fashion-MNIST training images (stratified)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1 / 9, 1 / 3, 1.0])
    parser.add_argument("--rung-epochs", type=int, nargs="+", default=[3, 3, 4])
    parser.add_argument("--pruner", default="successive_halving", choices=["successive_halving", "synchronous_halving"],
                        help="Optuna's asynchronous pruner, or whole rounds (default: successive_halving)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds, training seed = round (3+)")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: 100 faces at 32 px, 3 configurations, 1 round (figures meaningless)")
    args = parser.parse_args()
    n_rounds = rounds(args.repeats, args.smoke)
    if args.smoke:
        args.data, args.faces_pairs, args.size, args.fractions, args.rung_epochs = ["faces"], 50, 32, [1 / 3, 1.0], [1, 1]
    args.work.mkdir(parents=True, exist_ok=True)
    fractions = [round(f, 4) for f in args.fractions]
    schedule = "-".join(map(str, args.rung_epochs))
    kind = "halving" if args.pruner == "successive_halving" else "sync-halving"
    results = {}
    for data in args.data:
        cache = faces_cache(args.work, args.faces_pairs, args.size) if data == "faces" else fmnist_cache(args.work, args.fmnist_train)
        sides = {
            "full grid": lambda r, cache=cache, data=data: run_study(cache, full_space(grid(r, args.smoke)), args.work / f"{data}-full-seed{r}"),
            "successive halving": lambda r, cache=cache, data=data: run_study(
                cache, halving_space(grid(r, args.smoke), fractions, args.rung_epochs, args.pruner), args.work / f"{data}-{kind}-{schedule}-seed{r}"),
        }
        print(f"{data} ({cache}):", flush=True)
        samples = interleaved_figures(sides, n_rounds, log=lambda line: print(line, file=sys.stderr, flush=True))
        full, halving = samples["full grid"], samples["successive halving"]
        results[data] = {
            "cache": str(cache),
            "rungs": {"fractions": fractions, "epochs": args.rung_epochs},
            "pruner": args.pruner,
            **{side: {name: list(s.values) for name, s in figures.items()} for side, figures in samples.items()},
            "compute_ratio_of_medians": round(ratio_of_medians(halving["images processed"], full["images processed"]), 3),
            "wall_ratio_of_medians": round(ratio_of_medians(halving["wall s"], full["wall s"]), 3),
            "val_acc_gap_of_medians_pp": round(100 * (full["best val acc"].median - halving["best val acc"].median), 3),
        }
        print(markdown_table(["side", "best val acc", "images processed", "wall (whole tune process)"],
                             [[side, s["best val acc"].describe("", 4), s["images processed"].describe("images", 0), s["wall s"].describe("s")]
                              for side, s in samples.items()]))  # fmt: skip
        print(f"halving / full grid, ratio of medians: compute {results[data]['compute_ratio_of_medians']}, "
              f"wall {results[data]['wall_ratio_of_medians']}; best val acc gap (medians) {results[data]['val_acc_gap_of_medians_pp']} pp\n", flush=True)
    (args.work / f"results-{kind}-{schedule}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
