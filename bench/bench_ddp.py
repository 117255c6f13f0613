"""Benchmark: training images/s with 1 process vs 2 torchrun processes (DDP, gloo) on this CPU.

Runs the real ``train()`` on a random-pixel cache three ways, each over the same epochs: one
process with 1 thread (the per-process baseline), one process with 2 threads, and ``torchrun
--nproc-per-node 2`` with 1 thread per process. Scaling efficiency is the 2-process median
speed over twice the 1-process-1-thread median.

The method (bench/_method.py): fresh processes, the three settings interleaved for
``--repeats`` rounds, images/s from the wall time between epoch ends after the first epoch
(rank 0's ``on_epoch_end`` stamps; data loading and checkpoint writes included), ``--steps``
(100+) global batches per epoch; median and min–max printed.

Reproduce (alone on the machine):
    .venv/bin/python bench/bench_ddp.py --model s0_faces_cnn --size 64 --batch 128 --steps 100 --epochs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from _method import (
    EPOCH_CLOCK,
    check_repeats,
    check_steps,
    interleaved,
    markdown_table,
    rate_from_epoch_ends,
    ratio_of_medians,
    run_json,
)

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


TRAIN_SCRIPT = EPOCH_CLOCK + r"""
import json, os, sys
from tellapart.train import config_from_dict, train
spec = json.loads(sys.argv[1])
cfg = config_from_dict({"model": {"name": spec["model"]}, "epochs": spec["epochs"], "batch_size": spec["batch"],
                        "threads": spec["threads"], "checkpoint_every_s": 0})
train(spec["cache"], cfg, spec["out"], progress=False, tensorboard=False, on_epoch_end=stamp)
if os.environ.get("RANK", "0") == "0":  # under torchrun every rank trains; rank 0 reports
    print(json.dumps({"stamps": EPOCH_ENDS}))
"""


def run(script: Path, cache: Path, out: Path, model: str, epochs: int, *, procs: int, threads: int, batch: int, images: int) -> float:
    """images/s of one fresh run (all processes together), from rank 0's epoch-end stamps after the warm-up epoch."""
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, never a resume
    spec = {"cache": str(cache), "out": str(out), "model": model, "epochs": epochs, "threads": threads, "batch": batch}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)] if procs > 1 else [sys.executable]
    env = {**MALLOC_SETTINGS, "TELLAPART_NO_REEXEC": "1", "OMP_NUM_THREADS": str(threads)}
    return rate_from_epoch_ends(run_json([*launcher, str(script), json.dumps(spec)], env)["stamps"], images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="global batches per epoch (100+; images = batch x steps)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is the warm-up (2+)")
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved fresh-process runs per setting (3+)")
    parser.add_argument("--model", default="s0_faces_cnn")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: 2 steps, 1 repetition (figures meaningless)")
    args = parser.parse_args()
    images = args.batch * (2 if args.smoke else args.steps)
    if not args.smoke:
        check_steps(images, args.batch)
        check_repeats(args.repeats)
    work = Path(tempfile.mkdtemp(prefix="tellapart-bench-ddp-"))
    cache = make_cache(work, images, args.size)
    script = work / "train_once.py"
    script.write_text(TRAIN_SCRIPT)
    settings = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (1, 2), "2 processes (torchrun, gloo), 1 thread each": (2, 1)}
    samples = interleaved(
        {label: (lambda label=label, p=p, t=t: run(script, cache, work / f"p{p}t{t}", args.model, args.epochs, procs=p, threads=t,
                                                    batch=args.batch, images=images))
         for label, (p, t) in settings.items()},
        1 if args.smoke else args.repeats,
    )
    one, two = samples["1 process, 1 thread"], samples["2 processes (torchrun, gloo), 1 thread each"]
    print(f"\n{args.model}, {args.size} px, global batch {args.batch}, {images // args.batch} steps/epoch")
    print(markdown_table(["setting", "images/s"], [[label, s.describe()] for label, s in samples.items()]))
    print(f"scaling efficiency (median 2 proc / 2 x median 1 proc-1 thread): {ratio_of_medians(two, one) / 2:.2f}")


if __name__ == "__main__":
    main()
