"""Training configuration: frozen dataclasses, loaded from YAML and ``--set key=value`` overrides.

Unknown keys and wrong types are errors naming the key (dacite, strict mode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tellapart._errors import UserError
from tellapart.config import apply_assignments, deep_merge, load_dataclass, load_mapping, to_plain
from tellapart.config import yaml_load  # noqa: F401 - read by ._fit (a run's config.yaml)

__all__ = [
    "AugmentConfig",
    "DistributedConfig",
    "EarlyStopping",
    "FineTuneConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "apply_overrides",
]


@dataclass(frozen=True)
class ModelConfig:
    name: str = "cnn"  # a name from tellapart.models.list_models()
    args: dict[str, Any] = field(default_factory=dict)  # the builder's keyword options


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float | None = None  # L2 (adam/sgd) or decoupled (adamw); None: the model's default, else 0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr, in epochs (fractions allowed)
    final_lr_fraction: float = 0.0  # cosine/onecycle end at lr * this


@dataclass(frozen=True)
class AugmentConfig:
    """Batched tensor augmentations applied to training batches only."""

    hflip: bool = False  # mirror left-right with probability 1/2
    rotate: float = 0.0  # max rotation, degrees (uniform in [-rotate, rotate])
    translate: float = 0.0  # max shift, fraction of the image side
    scale: float = 0.0  # max zoom in/out, fraction (0.1: 0.9x-1.1x)
    brightness: float = 0.0  # max relative brightness change
    contrast: float = 0.0  # max relative contrast change
    cutout: float = 0.0  # side of a zeroed square, fraction of the image side (0: off)
    # "trivial": each image also gets one op drawn uniformly (identity, rotate, shear, shift,
    # brightness, contrast) at a uniform random strength (TrivialAugment, Mueller & Hutter 2021); no flips
    policy: Literal["none", "trivial"] = "none"

    @property
    def enabled(self) -> bool:
        return self.policy != "none" or any(v for k, v in dataclasses.asdict(self).items() if k != "policy")


@dataclass(frozen=True)
class EarlyStopping:
    metric: Literal["val_loss", "val_acc"] = "val_loss"  # chosen on validation, never on test
    patience: int = 0  # epochs without improvement before stopping; 0 = off
    min_delta: float = 0.0  # smallest change that counts as an improvement
    restore_best: bool = True  # end with the best epoch's weights


@dataclass(frozen=True)
class FineTuneConfig:
    """Transfer learning (tellapart.train._finetune): frozen backbone first, then its top unfrozen.

    Off (every layer trains from the start) while freeze_epochs is 0 and unfreeze is "all".
    """

    freeze_epochs: int = 0  # epochs training only the head, backbone frozen in inference mode; >= epochs: frozen all run
    unfreeze: int | str = "all"  # then also train: "all", "none", the top K backbone blocks, or comma-separated name prefixes
    lr_factor: float = 0.1  # lr multiplier once unfrozen after frozen epochs (Keras' guide recompiles at a ~10x lower lr)
    discriminative: float | None = None  # each unfrozen block below the top: lr x this once more (ULMFiT: 1/2.6); None: off
    train_bn: bool = False  # unfrozen BatchNorm layers update their statistics (False: inference mode, Keras training=False)
    cache_features: bool = True  # frozen epochs without augmentation train the head on backbone features cached in CACHE/features

    def __post_init__(self) -> None:
        unfreeze_ok = (isinstance(self.unfreeze, str) and bool(self.unfreeze.strip())) or (
            isinstance(self.unfreeze, int) and not isinstance(self.unfreeze, bool) and self.unfreeze >= 0
        )
        for key, value, ok in (
            ("fine_tune.freeze_epochs", self.freeze_epochs, self.freeze_epochs >= 0),
            ("fine_tune.unfreeze", self.unfreeze, unfreeze_ok),
            ("fine_tune.lr_factor", self.lr_factor, self.lr_factor > 0),
            ("fine_tune.discriminative", self.discriminative, self.discriminative is None or 0 < self.discriminative <= 1),
        ):
            if not ok:
                raise UserError(f"config {key}={value!r} is out of range")


@dataclass(frozen=True)
class DistributedConfig:
    """How a torchrun run of N processes reads ``batch_size`` and sets the learning rate (no effect in one process)."""

    batch: Literal["global", "per_process"] = "global"  # global: batch_size split over the N processes; per_process: N x batch_size
    scale_lr: Literal["none", "linear", "sqrt"] = "none"  # optim.lr x k or x sqrt(k), k = global batch / batch_size (Goyal et al. 2017)
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (torch.nn.SyncBatchNorm; CUDA only)

    def __post_init__(self) -> None:
        for key, value, choices in (("batch", self.batch, ("global", "per_process")), ("scale_lr", self.scale_lr, ("none", "linear", "sqrt"))):
            if value not in choices:
                raise UserError(f"config distributed.{key} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    epochs: int = 10
    batch_size: int = 64  # images per step; under torchrun the global batch unless distributed.batch=per_process
    eval_batch_size: int = 256
    label_smoothing: float = 0.0
    class_weights: Literal["none", "balanced"] = "none"  # "balanced": weights inverse to train class frequency
    single_logit: bool = False  # binary tasks: one output with a sigmoid (as the seeds) instead of two with softmax
    normalize: Literal["standardize", "unit", "symmetric"] = "standardize"  # (x-mean)/std of train | [0,1] | [-1,1]
    train_fraction: float = 1.0  # use a stratified, nested subset of the train split (tuning fidelity)
    seed: int = 0
    deterministic: bool = False  # bitwise-repeatable kernels (slower)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast where the hardware has it (CPU: conv nets not mostly depthwise)
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on for conv nets
    # torch.compile (inductor) the model for training and evaluation; checkpoints keep the plain module's keys.
    # Measured on this CPU: small CNNs trained 0.45-1.1x as fast, plus 20-100 s of compiling per run.
    compile: bool = False
    threads: int = 0  # intra-op CPU threads; 0 = every core
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...
    stream: Literal["auto", "on", "off"] = "auto"  # read the cache by pread, bounded memory; auto: when it is over half the RAM
    checkpoint_every_s: float = 120.0  # also checkpoint mid-epoch at this interval, seconds (0: epoch ends only)
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)  # freeze / unfreeze schedule for pretrained backbones
    distributed: DistributedConfig = field(default_factory=DistributedConfig)  # torchrun: batch semantics, lr scaling, SyncBatchNorm

    def __post_init__(self) -> None:
        for key, value, ok in (
            ("epochs", self.epochs, self.epochs >= 1),
            ("batch_size", self.batch_size, self.batch_size >= 1),
            ("train_fraction", self.train_fraction, 0 < self.train_fraction <= 1),
            ("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1),
            ("optim.lr", self.optim.lr, self.optim.lr > 0),
        ):
            if not ok:
                raise UserError(f"config {key}={value!r} is out of range")


def config_from_dict(data: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """Builds a TrainConfig; unknown keys and wrong types raise UserError naming the key and ``where``."""
    return load_dataclass(TrainConfig, data, where=where, hint="see 'tellapart train --help'")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists) for YAML/JSON."""
    return to_plain(dataclasses.asdict(cfg))


#: Keys of a run's own ``config.yaml`` that record the run rather than configure training.
_RUN_RECORD_KEYS = ("cache",)


def load_config(path: str | Path | None, overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None) -> TrainConfig:
    """Loads YAML (optional) over ``base`` and applies ``key.sub=value`` overrides.

    A run's own ``RUN/config.yaml`` is accepted as it is: the ``cache`` it records is dropped
    (the cache to train on is named on the command line), so a run folder reproduces its run.
    """
    data: dict[str, Any] = to_plain(dict(base or {}))
    if path is not None:
        loaded = load_mapping(path)
        data = deep_merge(data, {k: v for k, v in loaded.items() if k not in _RUN_RECORD_KEYS})
    data = apply_overrides(data, overrides)
    return config_from_dict(data, str(path) if path else "config")


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Applies ``a.b=value`` strings (``--set``); values are parsed as YAML (``1e-3``, ``true``, ``[32, 64]``)."""
    return apply_assignments(data, overrides, "--set")
