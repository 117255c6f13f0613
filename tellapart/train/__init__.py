"""Training: configs, the one explicit loop, runs that resume, and the model ladder."""

from ._augment import augment_batch
from ._baselines import BASELINES, DEFAULT_BASELINES, BaselineResult, FittedBaseline, baseline_row, fit_baseline
from ._checkpoint import LoadedModel, find_checkpoint, load_model, read_checkpoint, save_checkpoint
from ._config import (
    AugmentConfig,
    DistributedConfig,
    EarlyStopping,
    FineTuneConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from ._device import Runtime, resolve_runtime
from ._features import FeatureFeeder, HeadOnly, backbone_features, cached_features, feature_key, feature_side
from ._finetune import FineTune, backbone_units, unfrozen_names
from ._fit import RunResult, nested_subset, read_metrics, train
from ._ladder import DEFAULT_LADDER, Rung, first_network, load_ladder, run_ladder, run_seeds, rung_run
from ._loop import EvalResult, Feeder, TrainState, evaluate, logits_to_probs, train_one_epoch
from ._lr_find import LRFinderResult, find_lr, suggest_lr
from ._schedule import lr_at
from ._spread import SeedSpread, seed_spread
from ._throughput import measure_inference, measure_throughput

__all__ = [
    "BASELINES",
    "DEFAULT_BASELINES",
    "DEFAULT_LADDER",
    "BaselineResult",
    "FittedBaseline",
    "baseline_row",
    "fit_baseline",
    "AugmentConfig",
    "DistributedConfig",
    "EarlyStopping",
    "EvalResult",
    "FeatureFeeder",
    "Feeder",
    "FineTune",
    "FineTuneConfig",
    "HeadOnly",
    "LRFinderResult",
    "LoadedModel",
    "ModelConfig",
    "OptimConfig",
    "Rung",
    "RunResult",
    "Runtime",
    "ScheduleConfig",
    "TrainConfig",
    "TrainState",
    "apply_overrides",
    "augment_batch",
    "backbone_units",
    "backbone_features",
    "cached_features",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "feature_key",
    "feature_side",
    "find_checkpoint",
    "find_lr",
    "first_network",
    "load_config",
    "load_ladder",
    "load_model",
    "logits_to_probs",
    "lr_at",
    "measure_inference",
    "measure_throughput",
    "nested_subset",
    "read_checkpoint",
    "read_metrics",
    "resolve_runtime",
    "run_ladder",
    "run_seeds",
    "SeedSpread",
    "seed_spread",
    "rung_run",
    "save_checkpoint",
    "suggest_lr",
    "train",
    "train_one_epoch",
    "unfrozen_names",
]
