"""Benchmark: `prepare` vs the seeds' TensorFlow path, and cache read speed.

Side by side in one run, on the same files:
  * tellapart `prepare` (Pillow + JPEG draft, one decode per image) with 1 and 2 worker processes;
  * TensorFlow `tf.io.decode_jpeg` + `tf.image.resize` in a tf.data pipeline (map, cache, prefetch)
    with 1 and 2 threads, run by the Python of a separate venv that has TensorFlow
    (``--tf-python``; default ``.venv-bench/bin/python``);
  * reading a 20,000-image 64x64x3 cache: shuffled batches of 256 as normalised float tensors.

Usage:
    python bench/bench_prepare.py --images 400 --sizes 64 128 150
Run it alone on the machine: another busy process makes both sides slower and the ratio noisy.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tellapart.data import Cache, PrepareConfig, Preprocess, SynthConfig, epoch_order, iter_batches, open_source, prepare, synth_faces, to_tensor

TF_SCRIPT = r"""
import json, sys, time
import tensorflow as tf
folder, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
def load(path):
    img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    return tf.cast(tf.image.resize(img, (size, size)), tf.uint8)
files = tf.data.Dataset.list_files(folder + "/*/*.jpg", shuffle=False)
ds = files.map(load, num_parallel_calls=threads).cache().prefetch(tf.data.AUTOTUNE)
start = time.perf_counter()
n = sum(1 for _ in ds)  # the first pass decodes every file (later epochs read tf.data's cache)
seconds = time.perf_counter() - start
print(json.dumps({"n": n, "seconds": seconds}))
"""


def make_jpegs(folder: Path, count: int) -> None:
    """count 1024x1024 JPEGs of photographic-looking faces (the synthetic generator at full size)."""
    synth_faces(folder, SynthConfig(pairs=count // 2, size=1024, seed=1, quality=90), progress=False)


def time_prepare(folder: Path, size: int, workers: int, work: Path) -> float:
    out = work / f"cache-{size}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = PrepareConfig(preprocess=Preprocess(size=size), workers=workers)
    start = time.perf_counter()
    cache = prepare(open_source(folder, kind="paired"), out, cfg, progress=False)
    seconds = time.perf_counter() - start
    return len(cache) / seconds


def time_tf(python: str, folder: Path, size: int, threads: int) -> float:
    out = subprocess.run([python, "-c", TF_SCRIPT, str(folder), str(size), str(threads)], capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["n"] / result["seconds"]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def time_cache_reads(work: Path, n: int = 20_000, batch: int = 256, epochs: int = 3) -> tuple[float, int]:
    """images/s of shuffled normalised float batches from an n-image 64x64x3 cache."""
    folder = work / "idx"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    cache = prepare(open_source(folder, kind="idx"), work / "read-cache", PrepareConfig(preprocess=Preprocess(size=64)), progress=False)
    cache = Cache(cache.path)
    rows = np.arange(len(cache))
    for _ in iter_batches(cache.pixels, cache.labels, rows, batch):  # warm the page cache, as epoch 2+ of training
        pass
    start = time.perf_counter()
    seen = 0
    for epoch in range(epochs):
        for pixels, labels, _ in iter_batches(cache.pixels, cache.labels, epoch_order(rows, 0, epoch), batch):
            x = to_tensor(pixels, cache.mean, cache.std)
            seen += x.shape[0]
    return seen / (time.perf_counter() - start), len(cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="1024x1024 JPEGs to decode (default 400)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 150])
    parser.add_argument("--tf-python", default=str(Path(__file__).resolve().parents[1] / ".venv-bench/bin/python"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--skip-reads", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tellapart-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "jpegs"
    if not folder.exists():
        print(f"writing {args.images} 1024x1024 JPEGs to {folder} ...", file=sys.stderr)
        make_jpegs(folder, args.images)
    rows = []
    for size in args.sizes:
        for cores in (1, 2):
            ours = time_prepare(folder, size, cores, work)
            theirs = time_tf(args.tf_python, folder, size, cores)
            rows.append({"size": size, "cores": cores, "tellapart_img_s": round(ours, 1), "tensorflow_img_s": round(theirs, 1), "ratio": round(ours / theirs, 2)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| size | cores | tellapart prepare (img/s) | TensorFlow tf.data (img/s) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['cores']} | {r['tellapart_img_s']} | {r['tensorflow_img_s']} | {r['ratio']}x |")
    if not args.skip_reads:
        speed, n = time_cache_reads(work)
        print(f"\ncache reads: {speed:,.0f} images/s (64x64x3, {n} images, shuffled batches of 256 -> normalised float tensors)")


if __name__ == "__main__":
    main()
