"""Learning-rate schedules as pure functions of the step (nanoGPT's ``get_lr``)."""

from __future__ import annotations

import math

from ._config import ScheduleConfig

__all__ = ["lr_at"]


def lr_at(step: int, total_steps: int, steps_per_epoch: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    - constant: ``base_lr`` after the optional linear warm-up.
    - cosine: warm-up, then cosine decay to ``base_lr * final_lr_fraction``.
    - onecycle: warm-up (default 30% of training when none is set), then cosine annealing down.
    """
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name == "onecycle" and warmup == 0:
        warmup = int(0.3 * total_steps)
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if cfg.name == "constant":
        return base_lr
    floor = base_lr * cfg.final_lr_fraction
    span = max(total_steps - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
