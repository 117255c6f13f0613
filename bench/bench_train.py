"""Benchmark: training images/s of the seeds' models, tellapart's engine vs Keras 3 on TensorFlow.

Each model trains on the same random data shape with the same batch size and 2 threads.
tellapart runs its real ``train()`` (cache -> run folder); Keras runs ``model.fit`` on in-memory
arrays in the benchmark venv (``--tf-python``), once in float32 and once with the
``mixed_bfloat16`` policy, and the faster (by median) is the peer. Both sides get the same
environment (including tellapart's malloc settings).

The method (bench/_method.py): each repetition is a fresh process; sides interleave
(tellapart, Keras fp32, Keras bf16, tellapart, …) for ``--repeats`` rounds; every side is timed
the same way, by the wall time between epoch ends (train()'s ``on_epoch_end`` hook, a Keras
callback's ``on_epoch_end``) over the epochs after the first, so data loading, augmentation
and tellapart's per-epoch checkpoint writes all count; each epoch is ``--steps`` batches
(100+). Printed: median and min–max per side, and the ratio of medians.

Reproduce (alone on the machine; about 1.5 h on 2 cores):
    .venv/bin/python bench/bench_train.py --models s0 s1 s3 --steps 100 --epochs 3 --repeats 3
GPU (tellapart side only: the benchmark venv has no CUDA TensorFlow):
    .venv/bin/python bench/bench_train.py --models s0 s1 s3 --sides tellapart --device cuda
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from _method import (
    EPOCH_CLOCK,
    Samples,
    check_repeats,
    check_steps,
    interleaved,
    markdown_table,
    rate_from_epoch_ends,
    ratio_of_medians,
    run_json,
)

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
for f, n, d in ((32, 2, 0.2), (64, 2, 0.3), (128, 1, 0.4)):  # one 128 conv; L2 on the convs only
    for _ in range(n):
        layers += [L.Conv2D(f, 3, padding='same', kernel_initializer='he_uniform', kernel_regularizer=reg), L.Activation('mish'), L.BatchNormalization()]
    layers += [L.MaxPooling2D(2), L.Dropout(d)]
layers += [L.Flatten(), L.Dense(128, kernel_initializer='he_uniform'), L.Activation('mish'), L.BatchNormalization(), L.Dropout(0.5), L.Dense(10, activation='softmax')]
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

KERAS_SCRIPT = EPOCH_CLOCK + r"""
import json, os, sys
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
class Clock(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None): stamp()
m.fit(x, y, batch_size=spec["batch"], epochs=spec["epochs"], verbose=0, callbacks=[Clock()])
print(json.dumps({"stamps": EPOCH_ENDS, "precision": spec["policy"]}))
"""

TELLAPART_SCRIPT = EPOCH_CLOCK + r"""
import json, shutil, sys
from tellapart.train import config_from_dict, train
spec = json.loads(sys.argv[1])
shutil.rmtree(spec["out"], ignore_errors=True)  # a fresh run each repetition, never a resume
cfg = config_from_dict({"model": spec["model"], "epochs": spec["epochs"], "batch_size": spec["batch"], "device": spec["device"],
                        "single_logit": spec["single_logit"], "checkpoint_every_s": 0, **spec.get("extra", {})})
result = train(spec["cache"], cfg, spec["out"], progress=False, tensorboard=False, on_epoch_end=stamp)
print(json.dumps({"stamps": EPOCH_ENDS, "precision": result.summary["precision"]}))
"""


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def make_cache(work: Path, name: str, spec: dict, images: int) -> Path:
    """A cache of random images of the model's input shape (all in train: val/test shares 0)."""
    from tellapart.data import (
        PrepareConfig,
        Preprocess,
        SplitConfig,
        open_source,
        prepare,
    )

    folder = work / f"idx-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (images, spec["size"], spec["size"]) + ((3,) if spec["channels"] == 3 else ())
    _idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, shape, dtype=np.uint8))
    _idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(images) % spec["classes"]).astype(np.uint8))
    cfg = PrepareConfig(preprocess=Preprocess(size=spec["size"], grayscale=spec["channels"] == 1), split=SplitConfig(test=0.0, val=0.0))
    return prepare(open_source(folder, kind="idx"), work / f"cache-{name}", cfg, progress=False).path


ENV = {**MALLOC_SETTINGS, "TF_CPP_MIN_LOG_LEVEL": "3", "TELLAPART_NO_REEXEC": "1"}


def one_run(cmd: list[str], images: int, precisions: dict[str, str], label: str) -> float:
    """images/s of one fresh-process repetition, from its epoch-end stamps (the first epoch is the warm-up)."""
    out = run_json(cmd, ENV)
    precisions[label] = out["precision"]
    return rate_from_epoch_ends(out["stamps"], images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["s0", "s1", "s3"], choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=100, help="batches per epoch (100+; images = batch x steps)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is the warm-up (2+)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved fresh-process runs per side (3+)")
    parser.add_argument("--sides", nargs="+", default=["tellapart", "keras_fp32", "keras_bf16"], choices=["tellapart", "keras_fp32", "keras_bf16"])
    parser.add_argument("--device", default="cpu", help="tellapart's training device (cpu, cuda)")
    parser.add_argument("--compile", action="store_true", help="tellapart trains with compile: true (torch.compile; its compile time falls in epoch 1, which is not counted)")
    parser.add_argument("--smoke", action="store_true", help="check the script runs: 2 steps, 1 repetition (figures meaningless)")
    parser.add_argument("--tf-python", default=str(Path(__file__).resolve().parents[1] / ".venv-bench/bin/python"))
    args = parser.parse_args()
    if not args.smoke:
        check_repeats(args.repeats)
    if args.epochs < 2:
        raise SystemExit("--epochs must be 2+: the first epoch is the untimed warm-up")
    work = Path(tempfile.mkdtemp(prefix="tellapart-bench-train-"))
    table = []
    for name in args.models:
        spec = {**MODELS[name], "epochs": args.epochs, "device": args.device}
        images = spec["batch"] * (2 if args.smoke else args.steps)
        if not args.smoke:
            check_steps(images, spec["batch"])
        spec["images"] = images
        if args.compile:
            spec["extra"] = {**spec.get("extra", {}), "compile": True}
        cache = make_cache(work, name, spec, images)
        ours = [sys.executable, "-c", TELLAPART_SCRIPT, json.dumps({**spec, "cache": str(cache), "out": str(work / f"run-{name}")})]
        commands = {
            "tellapart": ours,
            "keras_fp32": [args.tf_python, "-c", KERAS_SCRIPT, json.dumps({**spec, "policy": "float32"})],
            "keras_bf16": [args.tf_python, "-c", KERAS_SCRIPT, json.dumps({**spec, "policy": "mixed_bfloat16"})],
        }
        precisions: dict[str, str] = {}
        print(f"{name}: {images} images, batch {spec['batch']}, {images // spec['batch']} steps/epoch, {args.epochs} epochs (1 warm-up)", flush=True)
        samples = interleaved(
            {side: (lambda side=side, cmd=commands[side], n=images, seen=precisions: one_run(cmd, n, seen, side)) for side in args.sides},
            1 if args.smoke else args.repeats,
        )
        row = [name + (" (compiled)" if args.compile else ""), spec["batch"]]
        row += [samples[side].describe() if side in samples else "-" for side in ("tellapart", "keras_fp32", "keras_bf16")]
        keras = [samples[side] for side in ("keras_fp32", "keras_bf16") if side in samples]
        if "tellapart" in samples and keras:
            peer: Samples = max(keras, key=lambda k: k.median)
            row.append(f"{ratio_of_medians(samples['tellapart'], peer):.2f}x vs {peer.label}")
        else:
            row.append("-")
        row.append(precisions.get("tellapart", "-"))
        table.append(row)
        print(json.dumps({"model": name, **{k: list(v.values) for k, v in samples.items()}}), flush=True)
    header = ["model", "batch", "tellapart", "Keras fp32", "Keras bf16", "ratio of medians vs faster Keras", "tellapart precision"]
    print()
    print(markdown_table(header, table))


if __name__ == "__main__":
    main()
