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

The method (bench/_method.py): every side of every repetition is a fresh process; the sides
interleave (fit, baselines, keras, fit, …) for ``--repeats`` rounds, round ``r`` with seed
``--seed + r`` (fit's split and training seed, Keras's weights and shuffling); baselines and Keras
use that round's fit cache, so the three sides share its rows. Printed per side: median and
min–max of the test accuracy and of the whole-process wall time. No warm-up is dropped: a budget
bounds the whole command a user runs, start-up included.

Reproduce (alone on the machine; results are appended to ``--results``)::

    .venv/bin/python bench/bench_fit.py --work /tmp/bench-fit --datasets fmnist10k digits faces --budgets 5m --repeats 3
Check that it runs (digits; fit at a 40 s budget searching one small CNN, Keras cut to 10 s; one
round; figures meaningless)::

    .venv/bin/python bench/bench_fit.py --work /tmp/bench-fit-smoke --smoke
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _method import interleaved_figures, markdown_table, rounds, run_json, run_timed

FMNIST = Path("/usr/share/datasets/fashion-mnist")
HERE = Path(__file__).resolve().parent.parent
# --smoke: the fewest candidates fit accepts, so a short budget finishes a network; Keras cut short
SMOKE_FIT = ["--preset", "fast", "--baselines", "none", "--pretrained", "off", "--architectures", "cnn_s", "--augment", "none"]
SMOKE_KERAS_S = 10.0

KERAS_SIDE = r"""
import json, sys, time
import numpy as np
started = time.monotonic()
import keras
from keras import layers as L
data = np.load(sys.argv[1]); budget = float(sys.argv[2])
keras.utils.set_random_seed(int(sys.argv[3]))
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
        x = np.frombuffer(gzip.decompress((FMNIST / "train-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16).reshape(-1, 28, 28)
        y = np.frombuffer(gzip.decompress((FMNIST / "train-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8)
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


def run_fit(data: Path, out: Path, budget: str, seed: int, extra: list[str]) -> dict:
    """One fresh ``tellapart fit`` (``extra``: more of its options) into an emptied ``out`` (never a resume), timed whole."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(HERE / ".venv/bin/tellapart"), "fit", str(data), "--out", str(out), "--budget", budget, "--seed", str(seed), "--quiet", *extra]
    if data.name == "faces":
        cmd += ["--kind", "paired"]
    try:
        wall = run_timed(cmd)
    except RuntimeError as exc:
        raise SystemExit(f"fit failed: {exc}") from None
    metrics = json.loads((out / "metrics.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    chosen = json.loads((out / "chosen.json").read_text())
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "test_accuracy": metrics["accuracy"], "ci": metrics["accuracy_ci"],
            "n": metrics["n"], "chosen": chosen["name"], "val_acc": chosen["val_acc"], "spent_s": plan["spent_s"],
            "decisions": plan["decisions"]["reasons"], "steps": plan["steps"], "rounds": plan["rounds"], "comparisons": metrics.get("comparisons", [])}


BASELINES_SIDE = r"""
import json, sys, time
from tellapart.data import Cache
from tellapart.train import DEFAULT_BASELINES, fit_baseline
import numpy as np
c = Cache(sys.argv[1]); out = []
for name in DEFAULT_BASELINES:
    t = time.monotonic(); m = fit_baseline(c, name); rows = np.sort(c.indices('test'))
    acc = float((m.predict(rows) == c.labels[rows]).mean())
    out.append({'baseline': name, 'test_accuracy': acc, 'val_acc': m.result.val_acc, 'wall_s': round(time.monotonic() - t, 1), 'train_rows': m.result.train_rows})
print(json.dumps(out))
"""


def run_baselines(cache: Path) -> tuple[list[dict], float]:
    """Every default baseline on ``cache`` in one fresh process: each one's figures, and the process's wall seconds."""
    return _timed_json([str(HERE / ".venv/bin/python"), "-c", BASELINES_SIDE, str(cache)], "baselines side")


def run_keras(cache: Path, work: Path, budget_s: float, tf_python: str, seed: int) -> dict:
    """The Keras side on ``cache``'s own train/val/test rows, in one fresh process timed whole."""
    from tellapart.data import Cache

    c = Cache(cache)
    arrays = {}
    for split, key in (("train", "tr"), ("val", "va"), ("test", "te")):
        rows = np.sort(c.indices(split))
        arrays[f"x{key}"], arrays[f"y{key}"] = np.asarray(c.pixels[rows]), c.labels[rows]
    npz = work / f"{cache.parent.name}-keras.npz"
    np.savez(npz, **arrays)
    answer, wall = _timed_json([tf_python, "-c", KERAS_SIDE, str(npz), str(budget_s), str(seed)], "keras side", {"TF_CPP_MIN_LOG_LEVEL": "3"})
    return {**answer, "wall_s": round(wall, 1)}


def _timed_json(cmd: list[str], what: str, env: dict[str, str] | None = None) -> tuple[Any, float]:
    """``cmd``'s JSON answer (its last stdout line) and the wall seconds of the whole process."""
    started = time.perf_counter()
    try:
        answer = run_json(cmd, env)
    except RuntimeError as exc:
        raise SystemExit(f"{what} failed: {exc}") from None
    return answer, time.perf_counter() - started


def sides_of(name: str, data: Path, budget: str, args: argparse.Namespace, results: Path) -> dict[str, Callable[[int], dict[str, float]]]:
    """Side → one repetition in round r (seed ``--seed + r``); each appends its details to ``results``.

    Baselines and Keras read round r's fit cache, so fit runs first in each round.
    """
    from tellapart.autofit import parse_budget

    def out(r: int) -> Path:
        return args.work / f"fit-{name}-{budget}-seed{args.seed + r}"

    def cache(r: int) -> Path:
        found = out(r) / "cache"
        if not (found / "manifest.json").is_file():
            raise SystemExit(f"{found}: no fit cache for seed {args.seed + r}; include fit in --sides (the other sides use its rows)")
        return found

    def record(side: str, r: int, details: object) -> None:
        with results.open("a") as f:
            f.write(json.dumps({"dataset": name, "budget": budget, "seed": args.seed + r, side: details}) + "\n")

    def fit(r: int) -> dict[str, float]:
        got = run_fit(data, out(r), budget, args.seed + r, SMOKE_FIT if args.smoke else [])
        record("fit", r, got)
        return {"test accuracy": got["test_accuracy"], "wall s": got["wall_s"]}

    def baselines(r: int) -> dict[str, float]:
        got, wall = run_baselines(cache(r))
        record("baselines", r, got)
        return {**{f"{b['baseline']} test accuracy": b["test_accuracy"] for b in got}, "wall s": wall}

    def keras(r: int) -> dict[str, float]:
        keras_budget = min(parse_budget(budget), SMOKE_KERAS_S) if args.smoke else parse_budget(budget)
        got = run_keras(cache(r), args.work, keras_budget, args.tf_python, args.seed + r)
        record("keras", r, got)
        return {"test accuracy": got["test_accuracy"], "wall s": got["wall_s"]}

    every = {"fit": fit, "baselines": baselines, "keras": keras}
    return {side: every[side] for side in ("fit", "baselines", "keras") if side in args.sides}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--datasets", nargs="+", default=["fmnist10k", "digits", "faces"], choices=["fmnist10k", "fmnist", "digits", "faces"])
    p.add_argument("--budgets", nargs="+", default=["5m"])
    p.add_argument("--sides", nargs="+", default=["fit", "baselines", "keras"], choices=["fit", "baselines", "keras"])
    p.add_argument("--tf-python", default=str(HERE / ".venv-bench/bin/python"))
    p.add_argument("--results", type=Path, help="JSON lines to append to, one per side and round (default: WORK/results.jsonl)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds, one seed each (3+)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first round; round r uses seed + r")
    p.add_argument("--smoke", action="store_true", help="check the script runs: digits, fit at a 40 s budget with one small CNN, Keras for 10 s, 1 round (figures meaningless)")
    args = p.parse_args()
    n_rounds = rounds(args.repeats, args.smoke)
    if args.smoke:
        args.datasets, args.budgets = ["digits"], ["40s"]
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.results or args.work / "results.jsonl"
    table = []
    for name in args.datasets:
        data = write_dataset(name, args.work)
        for budget in args.budgets:
            print(f"{name}, budget {budget}:", flush=True)
            samples = interleaved_figures(sides_of(name, data, budget, args, results), n_rounds)
            for side, figures in samples.items():
                for figure, s in figures.items():
                    wall = figure == "wall s"
                    table.append([name, budget, side, figure, s.describe("s" if wall else "", 1 if wall else 4)])
    print()
    print(markdown_table(["dataset", "budget", "side", "figure", "median (min–max, runs)"], table))


if __name__ == "__main__":
    main()
