"""Benchmark: training images/s with 1 process vs 2 torchrun processes (DDP, gloo) on this CPU.

Runs the real ``tellapart train`` on a random-pixel cache three ways, each over the same
epochs: one process with 1 thread (the per-process baseline), one process with 2 threads, and
``torchrun --nproc-per-node 2`` with 1 thread per process. Scaling efficiency is the 2-process
speed over twice the 1-process-1-thread speed. Images/s are taken from epochs after the first.

Usage:
    python bench/bench_ddp.py [--images 4096] [--size 64] [--epochs 3] [--model s0_faces_cnn]
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tellapart._launch import MALLOC_SETTINGS
from tellapart.data import PrepareConfig, Preprocess, SplitConfig, open_source, prepare


def make_cache(work: Path, images: int, size: int) -> Path:
    folder = work / "idx"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8)
    for name, array in (("train-images-idx3-ubyte.gz", data), ("train-labels-idx1-ubyte.gz", (np.arange(images) % 2).astype(np.uint8))):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        (folder / name).write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))
    cfg = PrepareConfig(preprocess=Preprocess(size=size), split=SplitConfig(test=0.0, val=0.0))
    return prepare(open_source(folder, kind="idx"), work / "cache", cfg, progress=False).path


def run(cache: Path, out: Path, model: str, epochs: int, *, procs: int, threads: int, batch: int) -> float:
    args = ["train", str(cache), "--model", model, "--epochs", str(epochs), "--out", str(out), "--quiet",
            "--set", f"threads={threads}", "--set", f"batch_size={batch}", "--set", "checkpoint_every_s=0"]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)] if procs > 1 else [sys.executable]
    env = {**os.environ, **MALLOC_SETTINGS, "TELLAPART_NO_REEXEC": "1", "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*launcher, "-m", "tellapart", *args], check=True, env=env, capture_output=True, text=True)
    rows = list(csv.DictReader((out / "metrics.csv").open()))[1:]
    return sum(float(r["images_per_s"]) for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--model", default="s0_faces_cnn")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tellapart-bench-ddp-"))
    cache = make_cache(work, args.images, args.size)
    one_1 = run(cache, work / "p1t1", args.model, args.epochs, procs=1, threads=1, batch=args.batch)
    one_2 = run(cache, work / "p1t2", args.model, args.epochs, procs=1, threads=2, batch=args.batch)
    two_1 = run(cache, work / "p2t1", args.model, args.epochs, procs=2, threads=1, batch=args.batch)
    result = {"model": args.model, "size": args.size, "global_batch": args.batch, "1 process, 1 thread": round(one_1, 1),
              "1 process, 2 threads": round(one_2, 1), "2 processes (torchrun, gloo), 1 thread each": round(two_1, 1),
              "scaling efficiency (2 proc / 2 x 1 proc-1 thread)": round(two_1 / (2 * one_1), 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
