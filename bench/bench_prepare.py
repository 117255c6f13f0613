"""Benchmark: `prepare` vs the seeds' TensorFlow path, and cache read speed.

Side by side in one run, on the same files:
  * tellapart `prepare` (Pillow + JPEG draft, one decode per image) with 1 and 2 worker processes,
    the whole call timed (listing, decoding, hashing, splitting, statistics, manifest);
  * TensorFlow `tf.io.decode_jpeg` + `tf.image.resize` in a tf.data pipeline (map, cache, prefetch)
    with 1 and 2 threads, run by the Python of a separate venv that has TensorFlow
    (``--tf-python``; default ``.venv-bench/bin/python``);
  * reading a 20,000-image 64x64x3 cache: shuffled batches of 256 as normalised float tensors.

The method (bench/_method.py): the corpus's measured properties are printed first (count, pixel
size, mean KiB per file, JPEG quality used). Each measurement is a fresh process pinned with
``taskset`` to 1 or 2 cores and timed the same way on both sides: wall time from just before the
pipeline is built to the last decoded image. One untimed run of each side warms the page cache;
then the sides interleave (tellapart, TensorFlow, tellapart, …) for ``--repeats`` rounds, and the
median, min–max and ratio of medians are printed.

Reproduce (alone on the machine; about 15 minutes on 2 cores):
    .venv/bin/python bench/bench_prepare.py --images 400 --sizes 64 128 150 --repeats 3
GPU decoding (tellapart side only, nvJPEG):
    .venv/bin/python bench/bench_prepare.py --sizes 64 150 --sides tellapart --decode-device cuda --skip-reads
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
from pathlib import Path

import numpy as np
from _method import (
    check_repeats,
    interleaved,
    jpeg_corpus,
    markdown_table,
    ratio_of_medians,
)

from tellapart.data import (
    PrepareConfig,
    Preprocess,
    SynthConfig,
    open_source,
    prepare,
    synth_faces,
)

TF_SCRIPT = r"""
import json, sys, time
import tensorflow as tf
folder, size, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
def load(path):
    img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    return tf.cast(tf.image.resize(img, (size, size)), tf.uint8)
start = time.perf_counter()  # as tellapart's side: from just before the pipeline is built
files = tf.data.Dataset.list_files(folder + "/*/*.jpg", shuffle=False)
options = tf.data.Options()
options.threading.private_threadpool_size = threads  # tf.data's own pool would otherwise use every core
options.threading.max_intra_op_parallelism = 1
ds = files.map(load, num_parallel_calls=threads).cache().prefetch(tf.data.AUTOTUNE).with_options(options)
n = sum(1 for _ in ds)  # the first pass decodes every file (later epochs read tf.data's cache)
seconds = time.perf_counter() - start
print(json.dumps({"n": n, "seconds": seconds}))
"""


JPEG_QUALITY = 90  # what make_jpegs writes at


def make_jpegs(folder: Path, count: int) -> None:
    """count 1024x1024 JPEGs of photographic-looking faces (the synthetic generator at full size)."""
    synth_faces(folder, SynthConfig(pairs=count // 2, size=1024, seed=1, quality=JPEG_QUALITY), progress=False)


PREPARE_SCRIPT = r"""
import json, shutil, sys, time
from pathlib import Path
from tellapart.data import PrepareConfig, Preprocess, open_source, prepare
if __name__ == "__main__":
    folder, out, size, workers, device = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    shutil.rmtree(out, ignore_errors=True)
    extra = {} if device == "cpu" else {"decode_device": device}
    start = time.perf_counter()
    cache = prepare(open_source(folder, kind="paired"), out, PrepareConfig(preprocess=Preprocess(size=size), workers=workers, **extra), progress=False)
    print(json.dumps({"n": len(cache), "seconds": time.perf_counter() - start}))
"""


def _cores(n: int) -> list[str]:
    """Pins a command to the first n cores, so "per core" means one core for both sides."""
    return ["taskset", "-c", ",".join(str(c) for c in range(n))] if shutil.which("taskset") else []


def time_prepare(folder: Path, size: int, workers: int, work: Path, device: str = "cpu") -> float:
    script = work / "prepare_once.py"
    script.write_text(PREPARE_SCRIPT)
    cmd = [*_cores(workers), sys.executable, str(script), str(folder), str(work / f"cache-{size}-{workers}"), str(size), str(workers), device]
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
    parser.add_argument("--repeats", type=int, default=3, help="interleaved fresh-process runs per side (3+)")
    parser.add_argument("--sides", nargs="+", default=["tellapart", "tensorflow"], choices=["tellapart", "tensorflow"])
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--decode-device", default="cpu", help="tellapart's JPEG decoder: cpu, or cuda (nvJPEG)")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: 1 repetition, no warm-up (figures meaningless)")
    args = parser.parse_args()
    if not args.smoke:
        check_repeats(args.repeats)
    work = args.work or Path(tempfile.mkdtemp(prefix="tellapart-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "jpegs"
    if not folder.exists() and not args.reads_only:
        print(f"writing {args.images} 1024x1024 JPEGs to {folder} ...", file=sys.stderr)
        make_jpegs(folder, args.images)
    if not args.reads_only:
        print(f"corpus: {jpeg_corpus(folder, JPEG_QUALITY)}", flush=True)
    rows = []
    for size in [] if args.reads_only else args.sizes:
        for cores in args.cores:
            sides = {
                "tellapart": lambda size=size, cores=cores: time_prepare(folder, size, cores, work, args.decode_device),
                "tensorflow": lambda size=size, cores=cores: time_tf(args.tf_python, folder, size, cores),
            }
            sides = {k: v for k, v in sides.items() if k in args.sides}
            if not args.smoke:
                for measure in sides.values():
                    measure()  # untimed: warms the page cache with the JPEG files
            print(f"{size} px, {cores} core(s):", flush=True)
            samples = interleaved(sides, 1 if args.smoke else args.repeats)
            ratio = f"{ratio_of_medians(samples['tellapart'], samples['tensorflow']):.2f}x" if len(samples) == 2 else "-"
            rows.append([size, cores, *(samples[k].describe() if k in samples else "-" for k in ("tellapart", "tensorflow")), ratio])
            print(json.dumps({"size": size, "cores": cores, **{k: list(v.values) for k, v in samples.items()}}), flush=True)
    if rows:
        decoder = f"tellapart prepare ({args.decode_device} decode)"
        print()
        print(markdown_table(["size", "cores", decoder, "TensorFlow tf.data", "ratio of medians"], rows))
    if not args.skip_reads:
        speed, n = time_cache_reads(work)
        print(f"\ncache reads: {speed:,.0f} images/s (64x64x3, {n} images, shuffled batches of 256 -> normalised float tensors)")


if __name__ == "__main__":
    main()
