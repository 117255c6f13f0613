"""A run's checkpoints: ``last.pt`` (everything to resume) and ``best.pt`` (the best epoch's weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tellapart.runs import RunDir

from ._checkpoint import save_checkpoint
from ._device import Runtime
from ._loop import TrainState

__all__ = ["Checkpointer"]

#: The loop position and selection record a resumed run continues from.
_STATE_KEYS = ("epoch", "batch", "step", "partial", "history", "best_value", "best_epoch", "wall_time")


@dataclass(frozen=True)
class Checkpointer:
    """Writes and restores one run's checkpoints; only the main process writes under torchrun.

    A checkpoint carries the model's registry spec, class names, exact preprocessing, config and the
    cache fingerprint, so ``predict``, ``export`` and ``evaluate`` rebuild exactly what was trained.
    """

    run: RunDir
    model: torch.nn.Module  # the plain module (never the DDP wrapper): state_dict keys stay loadable
    optimizer: torch.optim.Optimizer
    augment_rng: torch.Generator
    runtime: Runtime
    spec: dict[str, Any]
    class_names: list[str]
    preprocess: dict[str, Any]
    config: dict[str, Any]
    fingerprint: str
    is_main: bool = True

    def save_last(self, state: TrainState) -> None:
        """``last.pt``: called each epoch and every few minutes inside one (``train_one_epoch``'s callback)."""
        if self.is_main:  # ranks run in lockstep (DDP syncs every step), so rank 0's position is everybody's
            save_checkpoint(self.run.last, self._payload(state, with_optimizer=True))

    def save_best(self, state: TrainState) -> None:
        if self.is_main:
            save_checkpoint(self.run.best, self._payload(state, with_optimizer=False))

    def restore(self, saved: dict[str, Any], state: TrainState) -> None:
        """Puts weights, optimizer, RNGs and the loop position of ``saved`` (a ``last.pt``) back."""
        self.model.load_state_dict(saved["state_dict"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.augment_rng.set_state(saved["rng"]["augment"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and self.runtime.device.type == "cuda":  # dropout on the GPU draws from its own RNG
            torch.cuda.set_rng_state(saved["rng"]["cuda"], self.runtime.device)
        for key in _STATE_KEYS:
            setattr(state, key, saved["state"][key])

    def _payload(self, state: TrainState, *, with_optimizer: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.spec,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "class_names": self.class_names,
            "preprocess": self.preprocess,
            "config": self.config,
            "cache_fingerprint": self.fingerprint,
            "epoch": state.epoch,
        }
        if with_optimizer:
            data["optimizer"] = self.optimizer.state_dict()
            data["rng"] = {"augment": self.augment_rng.get_state(), "torch": torch.get_rng_state()}
            if self.runtime.device.type == "cuda":
                data["rng"]["cuda"] = torch.cuda.get_rng_state(self.runtime.device)
            data["state"] = {k: getattr(state, k) for k in _STATE_KEYS}
        return data
