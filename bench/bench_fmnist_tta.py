"""Benchmark: time to 93% test accuracy on real Fashion-MNIST, tellapart vs a seed-style Keras CNN.

Both sides train the same network — two VGG-style blocks (2 x [conv 3x3 -> BatchNorm -> ReLU],
2x2 max-pool, dropout 0.25; 32 then 64 filters), dense 256 + ReLU + dropout 0.5, softmax over 10
— on all 60,000 training images (28x28 grey) and are scored on the 10,000 test images after
every epoch (time-to-accuracy in the DAWNBench manner: the test set is the target). The clock
counts training only: neither side's per-epoch test scoring, nor data loading, is timed.

* Keras 3 on TensorFlow (``--tf-python``, the benchmark venv), the seeds' recipe: Adam 1e-3,
  batch 128, float32 (or ``--keras-policy mixed_bfloat16``), up to ``--keras-max-epochs``.
* tellapart ``train()`` on its cache: one-cycle Adam, label smoothing, bf16 autocast +
  channels_last as chosen by ``precision: auto``, ``--epochs`` epochs, batch ``--batch``.

Both run in subprocesses with the same 2 threads and malloc settings.

The method (bench/_method.py): every run is a fresh process (a new run folder each time; the
cache is prepared once); the sides interleave (tellapart, Keras, tellapart, …) for ``--repeats``
rounds; printed per side: median and min–max of the training seconds to 93%, the epochs to it,
the best test accuracy, and training images/s over the epochs after the first, then the ratio of
median times. The time to the target counts the first epoch, unlike a training speed: reaching
the target takes every epoch from the start, warm-up included.

Reproduce (alone on the machine):
    .venv/bin/python bench/bench_fmnist_tta.py --work /tmp/tta --sides tellapart keras --repeats 3
Check that it runs (2,000 training images, 1 epoch a side, one round; figures meaningless):
    .venv/bin/python bench/bench_fmnist_tta.py --work /tmp/tta-smoke --smoke
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _method import (
    interleaved_figures,
    markdown_table,
    rate_from_epoch_ends,
    ratio_of_medians,
    rounds,
    run_json,
    run_timed,
)

from tellapart._launch import MALLOC_SETTINGS

FMNIST = Path("/usr/share/datasets/fashion-mnist")
TARGET = 0.93

TELLAPART_SIDE = r"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from tellapart.data import Cache
from tellapart.train import Feeder, evaluate, load_model, load_config, resolve_runtime, train

cache_dir, out, epochs, batch, lr, smoothing = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
cache = Cache(cache_dir)
cfg = load_config(None, [
    "model.name=cnn",
    "model.args={blocks: [{filters: 32, convs: 2, batch_norm: true, pool: max, dropout: 0.25},"
    " {filters: 64, convs: 2, batch_norm: true, pool: max, dropout: 0.25}], dense: [256], dense_dropout: 0.5}",
    f"epochs={epochs}", f"batch_size={batch}", "optim.name=adam", f"optim.lr={lr}",
    "schedule.name=onecycle", "schedule.warmup_epochs=1", f"label_smoothing={smoothing}", "threads=2",
    "checkpoint_every_s=0",
])
test_rows = cache.indices("test")
curve = []

def score(epoch, row):
    loaded = load_model(out, "last")
    rt = resolve_runtime("cpu", "fp32", "off", 2, is_conv=True)
    feeder = Feeder(cache.pixels, cache.labels, tuple(loaded.preprocess["mean"]), tuple(loaded.preprocess["std"]), rt)
    acc = evaluate(loaded.model, feeder, test_rows, batch_size=1000).accuracy
    curve.append({"epoch": epoch, "train_seconds": row["wall_time"], "test_acc": round(acc, 4), "images_per_s": row["images_per_s"]})
    print(json.dumps(curve[-1]), file=sys.stderr, flush=True)
    return False

train(cache, cfg, out, on_epoch_end=score, progress=False, tensorboard=False, train_splits=("train", "val"))
print(json.dumps(curve))
"""

KERAS_SIDE = r"""
import gzip, json, os, sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
import keras
from keras import layers as L

folder, max_epochs, policy = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if policy != "float32":
    keras.mixed_precision.set_global_policy(policy)

def idx(name, offset):
    return np.frombuffer(gzip.open(os.path.join(folder, name)).read(), np.uint8, offset=offset)

x_train = (idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1) / 255.0).astype("float32")
y_train = idx("train-labels-idx1-ubyte.gz", 8).astype("int64")
x_test = (idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1) / 255.0).astype("float32")
y_test = idx("t10k-labels-idx1-ubyte.gz", 8).astype("int64")

layers = [keras.Input((28, 28, 1))]
for f in (32, 64):
    for _ in range(2):
        layers += [L.Conv2D(f, 3, padding="same"), L.BatchNormalization(), L.Activation("relu")]
    layers += [L.MaxPooling2D(2), L.Dropout(0.25)]
layers += [L.Flatten(), L.Dense(256, activation="relu"), L.Dropout(0.5), L.Dense(10, activation="softmax", dtype="float32")]
model = keras.Sequential(layers)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

class Clock(keras.callbacks.Callback):
    def __init__(self):
        self.total, self.curve = 0.0, []
    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        self.total += time.perf_counter() - self.t0  # training only: scoring below is not timed
        acc = float(self.model.evaluate(x_test, y_test, batch_size=1000, verbose=0)[1])
        self.curve.append({"epoch": epoch + 1, "train_seconds": round(self.total, 3), "test_acc": round(acc, 4),
                           "images_per_s": round(len(x_train) / (self.total / (epoch + 1)), 1)})
        print(json.dumps(self.curve[-1]), file=sys.stderr, flush=True)
        if acc >= 0.93:
            self.model.stop_training = True

clock = Clock()
model.fit(x_train, y_train, batch_size=128, epochs=max_epochs, shuffle=True, verbose=0, callbacks=[clock])
print(json.dumps(clock.curve))
"""


ENV = {**MALLOC_SETTINGS, "OMP_NUM_THREADS": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "TELLAPART_NO_REEXEC": "1"}


def run_side(cmd: list[str]) -> list[dict]:
    """One side's accuracy curve from a fresh process (its last stdout line)."""
    try:
        return run_json(cmd, ENV)  # type: ignore[return-value]
    except RuntimeError as exc:
        raise SystemExit(f"side failed: {exc}") from None


def time_to(curve: list[dict], target: float) -> float | None:
    return next((p["train_seconds"] for p in curve if p["test_acc"] >= target), None)


def curve_figures(curve: list[dict], images: int) -> dict[str, float]:
    """Time to the target (inf when missed), epochs to it, best test accuracy, training img/s after epoch 1."""
    reached = time_to(curve, TARGET)
    figures = {"time to target s": math.inf if reached is None else reached,
               "epochs to target": next((p["epoch"] for p in curve if p["test_acc"] >= TARGET), math.inf),
               "best test acc": max(p["test_acc"] for p in curve)}  # fmt: skip
    if len(curve) >= 2:  # the training clock's epoch ends: the same stamps the method times whole epochs by
        figures["img/s after epoch 1"] = rate_from_epoch_ends([p["train_seconds"] for p in curve], images)
    return figures


def write_subset(src: Path, dst: Path, n_train: int, n_test: int) -> Path:
    """The first ``n_train`` training and ``n_test`` test images of the IDX files in ``src``, as IDX files in ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, offset in (("images-idx3", 16), ("labels-idx1", 8)):
            raw = gzip.decompress((src / f"{prefix}-{kind}-ubyte.gz").read_bytes())
            item = 28 * 28 if kind.startswith("images") else 1
            header = bytearray(raw[:offset])
            header[4:8] = n.to_bytes(4, "big")  # the item count
            (dst / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(bytes(header) + raw[offset : offset + n * item], compresslevel=1))
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the cache and the runs (reused cache)")
    parser.add_argument("--sides", nargs="+", default=["tellapart", "keras"], choices=["tellapart", "keras"])
    parser.add_argument("--tf-python", default=".venv-bench/bin/python", help="python of the benchmark venv with TensorFlow")
    parser.add_argument("--fashion-mnist", type=Path, default=FMNIST, help="folder of the IDX files")
    parser.add_argument("--epochs", type=int, default=8, help="tellapart: one-cycle length in epochs")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="tellapart: one-cycle peak lr")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--keras-max-epochs", type=int, default=15)
    parser.add_argument("--keras-policy", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved fresh-process runs per side (3+)")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: 2,000 training images, 1 epoch, 1 round (figures meaningless)")
    args = parser.parse_args()
    n_rounds = rounds(args.repeats, args.smoke)
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.fashion_mnist
    if args.smoke:
        source = write_subset(args.fashion_mnist, args.work / "fmnist-smoke", 2000, 500)
        args.epochs = args.keras_max_epochs = 1
    result: dict = {"target": TARGET, "rounds": n_rounds}
    cache = args.work / ("fmnist-cache-smoke" if args.smoke else "fmnist-cache")
    sides: dict[str, Callable[[int], dict[str, float]]] = {}
    curves: dict[str, list[list[dict]]] = {side: [] for side in args.sides}
    if "tellapart" in args.sides:
        # train + test as the source gives them; val 0: train() then trains on train+val = all of train
        result["prepare_seconds"] = round(run_timed([sys.executable, "-m", "tellapart.cli", "data", "prepare", str(source), "--kind", "idx",
                                                     "--out", str(cache), "--size", "28", "--grayscale", "--quiet"]), 1)  # fmt: skip
        from tellapart.data import Cache

        train_images = len(Cache(cache).indices("train")) + len(Cache(cache).indices("val"))

        def ours(r: int) -> dict[str, float]:
            run = args.work / f"run-{r}"
            shutil.rmtree(run, ignore_errors=True)  # a fresh run each repetition, never a resume
            curves["tellapart"].append(run_side([sys.executable, "-c", TELLAPART_SIDE, str(cache), str(run), str(args.epochs), str(args.batch),
                                                 str(args.lr), str(args.label_smoothing)]))  # fmt: skip
            return curve_figures(curves["tellapart"][-1], train_images)

        sides["tellapart"] = ours
    if "keras" in args.sides:
        keras_images = int.from_bytes(gzip.decompress((source / "train-labels-idx1-ubyte.gz").read_bytes())[4:8], "big")

        def theirs(r: int) -> dict[str, float]:
            curves["keras"].append(run_side([args.tf_python, "-c", KERAS_SIDE, str(source), str(args.keras_max_epochs), args.keras_policy]))
            return curve_figures(curves["keras"][-1], keras_images)

        sides["keras"] = theirs
    samples = interleaved_figures(sides, n_rounds, log=lambda line: print(line, file=sys.stderr, flush=True))
    for side, figures in samples.items():
        result[side] = {"curves": curves[side], **{name: list(s.values) for name, s in figures.items()}}
    if "keras" in result:
        result["keras"]["policy"] = args.keras_policy
    rows = [[side, s["time to target s"].describe("s"), s["epochs to target"].describe("", 0), s["best test acc"].describe("", 4),
             s["img/s after epoch 1"].describe() if "img/s after epoch 1" in s else "-"] for side, s in samples.items()]  # fmt: skip
    print(markdown_table(["side", f"training seconds to {TARGET:.0%} test accuracy", "epochs to it", "best test acc", "training img/s after epoch 1"], rows))
    if len(samples) == 2 and all(math.isfinite(s["time to target s"].median) for s in samples.values()):
        speedup = ratio_of_medians(samples["keras"]["time to target s"], samples["tellapart"]["time to target s"])
        result["speedup_ratio_of_medians"] = round(speedup, 2)
        print(f"\nKeras / tellapart, ratio of median times to {TARGET:.0%}: {speedup:.2f}x")
    print(json.dumps({k: v for k, v in result.items() if k not in ("tellapart", "keras")}, indent=2))
    (args.work / f"result-{int(time.time())}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
