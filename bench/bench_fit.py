"""Benchmark: ``tellapart fit`` at a time budget on real data, beside classical baselines and a Keras CNN.

Datasets (all install offline; see the README's data notes):

* ``fmnist10k`` — a stratified 10,000 of Fashion-MNIST's train images (28x28 grey), as IDX files;
* ``fmnist``    — all of Fashion-MNIST: 60,000 train + its own 10,000 test images;
* ``digits``    — scikit-learn's 1,797 8x8 digits, written as PNG class folders;
* ``faces``     — the built-in synthetic faces vs comics (1,200 pairs at 256 px, paired layout).

Sides, each a separate process timed whole (wall clock, imports included):

* ``fit``       — ``tellapart fit DATA --budget B``: its own split, test read once;
* ``baselines`` — every classical baseline fitted on the fit cache's train split, scored on its test split;
* ``keras``     — Keras 3 on TensorFlow (``--tf-python``, the benchmark venv) trained the seeds' way (the
  S3 recipe: VGG-style 32-32-pool-64-64-pool-128-pool, dense 128; Adam 1e-3, batch 64; random flip,
  shift and rotation; early stopping on validation loss, patience 10 from epoch 10 on, best weights restored) on the
  *same* train/val/test rows and pixels as fit's cache, until early stopping or the same budget.

Usage (run it alone on the machine; results are appended to ``--results``)::

    .venv/bin/python bench/bench_fit.py --work /tmp/bench-fit --datasets fmnist10k digits faces --budgets 5m
    .venv/bin/python bench/bench_fit.py --work /tmp/bench-fit --datasets fmnist10k --sides keras
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FMNIST = Path("/usr/share/datasets/fashion-mnist")
HERE = Path(__file__).resolve().parent.parent

KERAS_SIDE = r"""
import json, sys, time
import numpy as np
started = time.monotonic()
import keras
from keras import layers as L
data = np.load(sys.argv[1]); budget = float(sys.argv[2])
xtr, ytr, xva, yva, xte, yte = (data[k] for k in ("xtr", "ytr", "xva", "yva", "xte", "yte"))
k = int(max(ytr.max(), yva.max(), yte.max())) + 1
side, ch = xtr.shape[1], xtr.shape[3]
pools = max(1, min(3, int(np.log2(side / 2))))
blocks = [(32, 2), (64, 2), (128, 1)][:pools]
layers = [keras.Input((side, side, ch)), L.Rescaling(1 / 255.0),
          L.RandomFlip("horizontal"), L.RandomTranslation(0.1, 0.1, fill_mode="constant"), L.RandomRotation(0.05, fill_mode="constant")]
for f, n in blocks:
    for _ in range(n):
        layers += [L.Conv2D(f, 3, padding="same", activation="relu"), L.BatchNormalization()]
    layers += [L.MaxPooling2D(), L.Dropout(0.2)]
layers += [L.Flatten(), L.Dense(128, activation="relu"), L.Dropout(0.3), L.Dense(k, activation="softmax")]
model = keras.Sequential(layers)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
class Budget(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() - started > budget * 0.95:
            self.model.stop_training = True
# patience counted from epoch 10 on: BatchNorm's early validation losses on small sets would stop it at once
stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True, start_from_epoch=10)
hist = model.fit(xtr, ytr, validation_data=(xva, yva), epochs=1000, batch_size=64, verbose=0, callbacks=[stop, Budget()])
acc = float((model.predict(xte, batch_size=256, verbose=0).argmax(1) == yte).mean())
print(json.dumps({"test_accuracy": acc, "n": int(len(yte)), "epochs": len(hist.history["loss"]),
                  "best_val_loss": float(min(hist.history["val_loss"]))}))
"""


def write_dataset(name: str, work: Path) -> Path:
    """The dataset's source folder under ``work`` (written once)."""
    if name == "fmnist":
        return FMNIST
    out = work / "data" / name
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    if name == "fmnist10k":
        x = np.frombuffer(gzip.open(FMNIST / "train-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 28, 28)
        y = np.frombuffer(gzip.open(FMNIST / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
        rng = np.random.default_rng(0)
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 1000, replace=False) for c in range(10)]))
        with gzip.open(tmp / "train-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, len(keep), 28, 28) + x[keep].tobytes())
        with gzip.open(tmp / "train-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, len(keep)) + y[keep].tobytes())
    elif name == "digits":
        from PIL import Image
        from sklearn.datasets import load_digits

        d = load_digits()
        for k, (img, label) in enumerate(zip(d.images, d.target)):
            (tmp / str(label)).mkdir(exist_ok=True)
            Image.fromarray((img * (255 / 16)).round().astype(np.uint8), "L").save(tmp / str(label) / f"{k:04d}.png")
    elif name == "faces":
        from tellapart.data import SynthConfig, synth_faces

        tmp.rmdir()
        synth_faces(tmp, SynthConfig(pairs=1200, size=256, seed=0), progress=False)
    else:
        raise SystemExit(f"unknown dataset {name}")
    tmp.rename(out)
    return out


def run_fit(data: Path, out: Path, budget: str) -> dict:
    cmd = [str(HERE / ".venv/bin/tellapart"), "fit", str(data), "--out", str(out), "--budget", budget, "--quiet"]
    if data.name == "faces":
        cmd += ["--kind", "paired"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"fit failed: {proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    chosen = json.loads((out / "chosen.json").read_text())
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "test_accuracy": metrics["accuracy"], "ci": metrics["accuracy_ci"],
            "n": metrics["n"], "chosen": chosen["name"], "val_acc": chosen["val_acc"], "spent_s": plan["spent_s"],
            "decisions": plan["decisions"]["reasons"], "steps": plan["steps"], "rounds": plan["rounds"], "comparisons": metrics.get("comparisons", [])}


def run_baselines(cache: Path) -> list[dict]:
    code = (
        "import json, sys, time\n"
        "from tellapart.data import Cache\nfrom tellapart.train import DEFAULT_BASELINES, fit_baseline\n"
        "import numpy as np\nc = Cache(sys.argv[1]); out = []\n"
        "for name in DEFAULT_BASELINES:\n"
        "    t = time.monotonic(); m = fit_baseline(c, name); rows = np.sort(c.indices('test'))\n"
        "    acc = float((m.predict(rows) == c.labels[rows]).mean())\n"
        "    out.append({'baseline': name, 'test_accuracy': acc, 'val_acc': m.result.val_acc, 'wall_s': round(time.monotonic() - t, 1), 'train_rows': m.result.train_rows})\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(HERE / ".venv/bin/python"), "-c", code, str(cache)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_keras(cache: Path, work: Path, budget_s: float, tf_python: str) -> dict:
    from tellapart.data import Cache

    c = Cache(cache)
    arrays = {}
    for split, key in (("train", "tr"), ("val", "va"), ("test", "te")):
        rows = np.sort(c.indices(split))
        arrays[f"x{key}"], arrays[f"y{key}"] = np.asarray(c.pixels[rows]), c.labels[rows]
    npz = work / f"{cache.parent.name}-keras.npz"
    np.savez(npz, **arrays)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.monotonic()
    proc = subprocess.run([tf_python, "-c", KERAS_SIDE, str(npz), str(budget_s)], capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"keras side failed: {proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": round(wall, 1)}


def main() -> None:
    from tellapart.autofit import parse_budget

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--datasets", nargs="+", default=["fmnist10k", "digits", "faces"], choices=["fmnist10k", "fmnist", "digits", "faces"])
    p.add_argument("--budgets", nargs="+", default=["5m"])
    p.add_argument("--sides", nargs="+", default=["fit", "baselines", "keras"], choices=["fit", "baselines", "keras"])
    p.add_argument("--tf-python", default=str(HERE / ".venv-bench/bin/python"))
    p.add_argument("--results", type=Path, help="JSON lines to append to (default: WORK/results.jsonl)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.results or args.work / "results.jsonl"
    for name in args.datasets:
        data = write_dataset(name, args.work)
        for budget in args.budgets:
            out = args.work / f"fit-{name}-{budget}"
            row = {"dataset": name, "budget": budget}
            if "fit" in args.sides:
                row["fit"] = run_fit(data, out, budget)
                print(f"{name} {budget} fit: test {row['fit']['test_accuracy']:.4f} in {row['fit']['wall_s']} s", file=sys.stderr)
            if "baselines" in args.sides:
                row["baselines"] = run_baselines(out / "cache")
                print(f"{name} baselines: {[(b['baseline'], round(b['test_accuracy'], 4)) for b in row['baselines']]}", file=sys.stderr)
            if "keras" in args.sides:
                row["keras"] = run_keras(out / "cache", args.work, parse_budget(budget), args.tf_python)
                print(f"{name} {budget} keras: test {row['keras']['test_accuracy']:.4f} in {row['keras']['wall_s']} s", file=sys.stderr)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
