"""Checkpoints: atomic writes, ``weights_only`` loads, and everything needed to rebuild the model.

A checkpoint holds the model's registry name and options, the class names and the exact
preprocessing (size, channels, fit, mean/std), so prediction and export cannot drift from training.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tellapart._errors import UserError
from tellapart._files import atomic_write_bytes
from tellapart.models import Classifier, create_model, model_kwargs
from tellapart.runs import RunDir

__all__ = ["CHECKPOINT_FORMAT", "LoadedModel", "save_checkpoint", "read_checkpoint", "load_model", "find_checkpoint", "fault_point"]

CHECKPOINT_FORMAT = 1


#: Fault injection for the reliability tests: ``TELLAPART_FAULT=after_last_pt`` (or a comma list
#: of ``NAME`` / ``NAME@K``, K counting from 1) makes the process exit with status 137 (as if
#: SIGKILLed) the K-th time it passes the point named NAME. Unset, it costs one dict lookup.
FAULT_ENV = "TELLAPART_FAULT"
_passed: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Dies here (``os._exit(137)``) when the fault-injection variable names this point."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    _passed[name] = _passed.get(name, 0) + 1
    for spec in wanted.split(","):
        point, _, nth = spec.strip().partition("@")
        if point == name and _passed[name] == int(nth or 1):
            os._exit(137)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Writes ``payload`` to ``path`` atomically: a crash mid-write leaves the old file intact.

    The checkpoint is serialised in memory first, so a full disk surfaces as an ``OSError`` of the
    file write (turned into a UserError naming the path and the space needed) rather than as
    PyTorch's opaque ``inline_container`` RuntimeError; the temporary file is removed and the
    previous checkpoint kept, so ``--resume`` still works.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buf)
    fault_point(f"before_{path.stem}_pt")
    atomic_write_bytes(path, buf.getbuffer().tobytes())
    fault_point(f"after_{path.stem}_pt")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Loads a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user-facing problem
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path} is not a readable tellapart checkpoint ({reason}); retrain, or resume from a copy") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a tellapart checkpoint of format {CHECKPOINT_FORMAT}")
    return data


def find_checkpoint(run: str | Path, which: str = "best") -> Path:
    """``RUN/checkpoints/{which}.pt``, or ``run`` itself when it is a file."""
    p = Path(run)
    if p.is_file():
        return p
    candidate = RunDir(p).checkpoints / f"{which}.pt"
    if not candidate.is_file():
        raise UserError(f"{p} holds no {which} checkpoint ({candidate}); is it a run folder written by 'tellapart train'?")
    return candidate


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a checkpoint, with the facts needed to feed it."""

    model: Classifier
    class_names: list[str]
    preprocess: dict[str, Any]  # size, grayscale, fit, mean, std, channels_last
    checkpoint: dict[str, Any]

    @property
    def single_logit(self) -> bool:
        return bool(self.checkpoint["model"].get("single_logit", False))


def load_model(run: str | Path, which: str = "best") -> LoadedModel:
    """Rebuilds the model of a run (or checkpoint file) in eval mode on the CPU."""
    ckpt = read_checkpoint(find_checkpoint(run, which))
    spec = ckpt["model"]
    args = dict(spec["args"])
    if "weights" in model_kwargs(spec["name"]):
        args["weights"] = None  # pretrained weights are in the state dict below: never look for the file again
    model = create_model(
        spec["name"], in_chans=spec["in_chans"], num_classes=spec["num_outputs"], input_size=spec["input_size"], **args
    )
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return LoadedModel(model, list(ckpt["class_names"]), dict(ckpt["preprocess"]), ckpt)
