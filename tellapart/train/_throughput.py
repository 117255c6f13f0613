"""How many training images per second a config reaches on this machine, measured in seconds.

``fit`` plans a budget with it: a few real optimizer steps (augmentation included) on cache
batches, after warm-up steps, on a throw-away copy of the model; nothing is written.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from tellapart.data import Cache, iter_batches

from ._augment import augment_batch
from ._config import TrainConfig
from ._builders import build_model_for, build_optimizer, feeder_for, runtime_for
from ._loop import train_step

__all__ = ["measure_inference", "measure_throughput"]


def measure_throughput(cache: Cache, cfg: TrainConfig, *, steps: int = 6, warmup: int = 2) -> float:
    """Training images per second of ``cfg`` on ``cache`` (train split), from ``steps`` timed steps."""
    model, _ = build_model_for(cache, cfg)
    runtime = runtime_for(model, cfg)
    model = model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    model.train()
    optimizer = build_optimizer(model, cfg)
    feeder = feeder_for(model, cache, cfg, runtime)
    rows = cache.indices("train")
    rng = np.random.default_rng(cfg.seed)
    need = (steps + warmup) * cfg.batch_size
    order = rng.choice(rows, size=need, replace=len(rows) < need)
    gen = torch.Generator().manual_seed(cfg.seed)
    black = feeder.black
    rng_state = torch.get_rng_state()  # dropout draws here must not shift the caller's stream
    seen, started = 0, 0.0
    try:
        for k, (pixels, labels, _) in enumerate(iter_batches(feeder.pixels, feeder.labels, np.sort(order), cfg.batch_size)):
            if k == warmup:
                started = time.perf_counter()
            x = feeder.tensor(pixels)
            y = torch.from_numpy(labels).to(runtime.device)
            if cfg.augment.enabled:
                x = augment_batch(x, cfg.augment, gen, black=black)
            train_step(model, optimizer, runtime, x, y, label_smoothing=cfg.label_smoothing, class_weights=None)
            if k >= warmup:
                seen += len(labels)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
    finally:
        torch.set_rng_state(rng_state)
    return seen / max(time.perf_counter() - started, 1e-9)


@torch.no_grad()
def measure_inference(cache: Cache, cfg: TrainConfig, *, steps: int = 4, warmup: int = 1) -> float:
    """Forward-only images per second of ``cfg``'s model (eval mode): what computing frozen features costs."""
    model, _ = build_model_for(cache, cfg)
    runtime = runtime_for(model, cfg)
    model = model.to(runtime.device, memory_format=torch.channels_last if runtime.channels_last else torch.preserve_format)
    model.eval()
    feeder = feeder_for(model, cache, cfg, runtime)
    rows = cache.indices("train")
    need = (steps + warmup) * cfg.batch_size
    order = np.sort(np.random.default_rng(cfg.seed).choice(rows, size=need, replace=len(rows) < need))
    seen, started = 0, 0.0
    for k, (pixels, labels, _) in enumerate(iter_batches(feeder.pixels, feeder.labels, order, cfg.batch_size)):
        if k == warmup:
            started = time.perf_counter()
        with runtime.autocast():
            model(feeder.tensor(pixels))
        if k >= warmup:
            seen += len(labels)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    return seen / max(time.perf_counter() - started, 1e-9)
