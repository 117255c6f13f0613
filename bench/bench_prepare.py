"""Benchmark: `prepare` vs the seeds' TensorFlow path, and cache read speed.

Side by side in one run, on the same files:
  * tellapart `prepare` (Pillow + JPEG draft, one decode per image) with 1 and 2 worker processes,
    the whole call timed (listing, decoding, hashing, splitting, statistics, manifest);
  * TensorFlow `tf.io.decode_jpeg` + `tf.image.resize` in a tf.data pipeline (map, cache, prefetch)
    with 1 and 2 threads, run by the Python of a separate venv that has TensorFlow
    (``--tf-python``; default ``.venv-bench/bin/python``);
  * reading a 20,000-image 64x64x3 cache: shuffled batches of 256 as normalised float tensors.

Usage:
    python bench/bench_prepare.py --images 400 --sizes 64 128 150
Each measurement runs in its own process pinned with ``taskset`` to 1 or 2 cores.
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
options = tf.data.Options()
options.threading.private_threadpool_size = threads  # tf.data's own pool would otherwise use every core
options.threading.max_intra_op_parallelism = 1
ds = files.map(load, num_parallel_calls=threads).cache().prefetch(tf.data.AUTOTUNE).with_options(options)
start = time.perf_counter()
n = sum(1 for _ in ds)  # the first pass decodes every file (later epochs read tf.data's cache)
seconds = time.perf_counter() - start
print(json.dumps({"n": n, "seconds": seconds}))
"""


def make_jpegs(folder: Path, count: int) -> None:
    """count 1024x1024 JPEGs of photographic-looking faces (the synthetic generator at full size)."""
    synth_faces(folder, SynthConfig(pairs=count // 2, size=1024, seed=1, quality=90), progress=False)


PREPARE_SCRIPT = r"""
import json, shutil, sys, time
from pathlib import Path
from tellapart.data import PrepareConfig, Preprocess, open_source, prepare
if __name__ == "__main__":
    folder, out, size, workers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cache = prepare(open_source(folder, kind="paired"), out, PrepareConfig(preprocess=Preprocess(size=size), workers=workers), progress=False)
    print(json.dumps({"n": len(cache), "seconds": time.perf_counter() - start}))
"""


def _cores(n: int) -> list[str]:
    """Pins a command to the first n cores, so "per core" means one core for both sides."""
    return ["taskset", "-c", ",".join(str(c) for c in range(n))] if shutil.which("taskset") else []


def time_prepare(folder: Path, size: int, workers: int, work: Path) -> float:
    script = work / "prepare_once.py"
    script.write_text(PREPARE_SCRIPT)
    cmd = [*_cores(workers), sys.executable, str(script), str(folder), str(work / f"cache-{size}-{workers}"), str(size), str(workers)]
    result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    return result["n"] / result["seconds"]


def time_tf(python: str, folder: Path, size: int, threads: int) -> float:
    out = subprocess.run([*_cores(threads), python, "-c", TF_SCRIPT, str(folder), str(size), str(threads)], capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
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
    # measured in a fresh process, as a training run reads its cache
    out = subprocess.run([*_cores(2), sys.executable, "-c", READ_SCRIPT, str(cache.path), str(batch), str(epochs)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]), len(cache)


READ_SCRIPT = r"""
import sys, time
import numpy as np
from tellapart.data import Cache, epoch_order, iter_batches, to_tensor
cache, batch, epochs = Cache(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rows = np.arange(len(cache))
for pixels, _, _ in iter_batches(cache.pixels, cache.labels, rows, batch):  # page cache warm, as from epoch 2 on
    to_tensor(pixels, cache.mean, cache.std)
start, seen = time.perf_counter(), 0
for epoch in range(epochs):
    for pixels, labels, _ in iter_batches(cache.pixels, cache.labels, epoch_order(rows, 0, epoch), batch):
        seen += to_tensor(pixels, cache.mean, cache.std).shape[0]
print(seen / (time.perf_counter() - start))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="1024x1024 JPEGs to decode (default 400)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 150])
    parser.add_argument("--tf-python", default=str(Path(__file__).resolve().parents[1] / ".venv-bench/bin/python"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--skip-reads", action="store_true", help="skip the cache-read measurement")
    parser.add_argument("--reads-only", action="store_true", help="only the cache-read measurement")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tellapart-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "jpegs"
    if not folder.exists() and not args.reads_only:
        print(f"writing {args.images} 1024x1024 JPEGs to {folder} ...", file=sys.stderr)
        make_jpegs(folder, args.images)
    rows = []
    for size in [] if args.reads_only else args.sizes:
        for cores in (1, 2):
            ours = time_prepare(folder, size, cores, work)
            theirs = time_tf(args.tf_python, folder, size, cores)
            rows.append({"size": size, "cores": cores, "tellapart_img_s": round(ours, 1), "tensorflow_img_s": round(theirs, 1), "ratio": round(ours / theirs, 2)})
            print(json.dumps(rows[-1]), flush=True)
    if rows:
        print("\n| size | cores | tellapart prepare (img/s) | TensorFlow tf.data (img/s) | ratio |")
        print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['cores']} | {r['tellapart_img_s']} | {r['tensorflow_img_s']} | {r['ratio']}x |")
    if not args.skip_reads:
        speed, n = time_cache_reads(work)
        print(f"\ncache reads: {speed:,.0f} images/s (64x64x3, {n} images, shuffled batches of 256 -> normalised float tensors)")


if __name__ == "__main__":
    main()
