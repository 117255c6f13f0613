"""Benchmark: training images/s of the seeds' models, tellapart's engine vs Keras 3 on TensorFlow.

Each model trains on the same random data shape with the same batch size and 2 threads; the
two sides alternate model by model in one run. tellapart runs its real ``train()`` (cache ->
run folder) in a subprocess; Keras runs ``model.fit`` in a subprocess of the benchmark venv
(``--tf-python``), once in float32 and once with the ``mixed_bfloat16`` policy, and the faster
is the peer. Both sides get the same environment (including tellapart's malloc settings).
Speed is taken from the epochs after the first (compile/warm-up excluded).

Usage:
    python bench/bench_train.py [--models s0 s1 s3] [--images 2048] [--epochs 3] [--compile]
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tellapart._launch import MALLOC_SETTINGS

# name: (tellapart model config, input size, channels, classes, batch size, keras builder source)
MODELS: dict[str, dict] = {
    "s0": {"model": {"name": "s0_faces_cnn"}, "size": 64, "channels": 3, "classes": 2, "batch": 100, "single_logit": True,
           "keras": """
m = keras.Sequential([keras.Input((64, 64, 3)), L.Conv2D(12, 3, strides=2, activation='relu'),
    L.Conv2D(24, 6, strides=2, activation='relu'), L.Flatten(), L.Dense(200, activation='relu'), L.Dense(1, activation='sigmoid')])
loss = 'binary_crossentropy'
"""},
    "s1": {"model": {"name": "s1_grid_winner"}, "size": 150, "channels": 1, "classes": 2, "batch": 32, "single_logit": True,
           "keras": """
layers = [keras.Input((150, 150, 1))]
for _ in range(5):
    layers += [L.Conv2D(32, 3, activation='relu'), L.MaxPooling2D(2)]
layers += [L.Flatten(), L.Dense(32, activation='relu'), L.Dense(32, activation='relu'), L.Dense(1, activation='sigmoid')]
m = keras.Sequential(layers)
loss = 'binary_crossentropy'
"""},
    "s3": {"model": {"name": "s3_cifar_vgg"}, "size": 32, "channels": 3, "classes": 10, "batch": 128, "single_logit": False,
           "keras": """
reg = keras.regularizers.l2(0.001)
layers = [keras.Input((32, 32, 3))]
for f, d in ((32, 0.2), (64, 0.3), (128, 0.4)):
    for _ in range(2):
        layers += [L.Conv2D(f, 3, padding='same', kernel_initializer='he_uniform', kernel_regularizer=reg), L.Activation('mish'), L.BatchNormalization()]
    layers += [L.MaxPooling2D(2), L.Dropout(d)]
layers += [L.Flatten(), L.Dense(128, kernel_initializer='he_uniform', kernel_regularizer=reg), L.Activation('mish'), L.BatchNormalization(), L.Dropout(0.5), L.Dense(10, activation='softmax')]
m = keras.Sequential(layers)
loss = 'sparse_categorical_crossentropy'
"""},
    "mnv2_full": {"model": {"name": "mobilenetv2_100"}, "size": 96, "channels": 3, "classes": 10, "batch": 64, "single_logit": False,
                  "keras": """
base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, include_top=False, pooling='avg')
m = keras.Sequential([keras.Input((96, 96, 3)), base, L.Dense(10, activation='softmax')])
loss = 'sparse_categorical_crossentropy'
"""},
    # frozen base: tellapart trains the head on features cached in epoch 1; Keras recomputes the base every epoch
    "mnv2_frozen": {"model": {"name": "mobilenetv2_100"}, "size": 96, "channels": 3, "classes": 10, "batch": 64, "single_logit": False,
                    "extra": {"fine_tune": {"freeze_epochs": 100}},
                    "keras": """
base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, include_top=False, pooling='avg')
base.trainable = False
m = keras.Sequential([keras.Input((96, 96, 3)), base, L.Dense(10, activation='softmax')])
loss = 'sparse_categorical_crossentropy'
"""},
}

KERAS_SCRIPT = r"""
import json, os, sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
import keras
from keras import layers as L
spec = json.loads(sys.argv[1])
if spec["policy"] != "float32":
    keras.mixed_precision.set_global_policy(spec["policy"])
exec(spec["keras"])
m.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
rng = np.random.default_rng(0)
x = rng.random((spec["images"], spec["size"], spec["size"], spec["channels"]), dtype=np.float32)
y = rng.integers(0, spec["classes"], spec["images"])
times = []
class T(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, e, logs=None): times.append(time.perf_counter() - self.t)
m.fit(x, y, batch_size=spec["batch"], epochs=spec["epochs"], verbose=0, callbacks=[T()])
print(json.dumps({"images_per_s": spec["images"] / (sum(times[1:]) / len(times[1:]))}))
"""

TELLAPART_SCRIPT = r"""
import json, sys
from tellapart.train import config_from_dict, train
spec = json.loads(sys.argv[1])
cfg = config_from_dict({"model": spec["model"], "epochs": spec["epochs"], "batch_size": spec["batch"],
                        "single_logit": spec["single_logit"], "checkpoint_every_s": 0, **spec.get("extra", {})})
result = train(spec["cache"], cfg, spec["out"], progress=False, tensorboard=False)
later = result.history[1:]
print(json.dumps({"images_per_s": sum(r["images_per_s"] for r in later) / len(later), "precision": result.summary["precision"]}))
"""


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def make_cache(work: Path, name: str, spec: dict, images: int) -> Path:
    """A cache of random images of the model's input shape (all in train: val/test shares 0)."""
    from tellapart.data import PrepareConfig, Preprocess, SplitConfig, open_source, prepare

    folder = work / f"idx-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (images, spec["size"], spec["size"]) + ((3,) if spec["channels"] == 3 else ())
    _idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, shape, dtype=np.uint8))
    _idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(images) % spec["classes"]).astype(np.uint8))
    cfg = PrepareConfig(preprocess=Preprocess(size=spec["size"], grayscale=spec["channels"] == 1), split=SplitConfig(test=0.0, val=0.0))
    return prepare(open_source(folder, kind="idx"), work / f"cache-{name}", cfg, progress=False).path


def run(cmd: list[str]) -> dict:
    env = {**os.environ, **MALLOC_SETTINGS, "TF_CPP_MIN_LOG_LEVEL": "3", "TELLAPART_NO_REEXEC": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="tellapart trains with compile: true (torch.compile; its compile time falls in epoch 1, which is not counted)")
    parser.add_argument("--tf-python", default=str(Path(__file__).resolve().parents[1] / ".venv-bench/bin/python"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tellapart-bench-train-"))
    rows = []
    for name in args.models:
        spec = {**MODELS[name], "images": args.images, "epochs": args.epochs}
        if args.compile:
            spec["extra"] = {**spec.get("extra", {}), "compile": True}
        cache = make_cache(work, name, spec, args.images)
        ours = run([sys.executable, "-c", TELLAPART_SCRIPT, json.dumps({**spec, "cache": str(cache), "out": str(work / f"run-{name}")})])
        keras = {p: run([args.tf_python, "-c", KERAS_SCRIPT, json.dumps({**spec, "policy": p})])["images_per_s"] for p in ("float32", "mixed_bfloat16")}
        peer = max(keras, key=keras.get)
        row = {"model": name + (" (compiled)" if args.compile else ""), "batch": spec["batch"], "tellapart_img_s": round(ours["images_per_s"], 1), "tellapart_precision": ours["precision"],
               "keras_fp32_img_s": round(keras["float32"], 1), "keras_bf16_img_s": round(keras["mixed_bfloat16"], 1),
               "ratio_vs_faster_keras": round(ours["images_per_s"] / keras[peer], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| model | batch | tellapart (img/s) | Keras fp32 (img/s) | Keras bf16 (img/s) | ratio vs faster Keras |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['tellapart_img_s']} ({r['tellapart_precision']}) | {r['keras_fp32_img_s']} | {r['keras_bf16_img_s']} | {r['ratio_vs_faster_keras']}x |")


if __name__ == "__main__":
    main()
