"""Tuning: Optuna studies over TrainConfig keys, pruned on data subsets or epochs, any number of workers.

The training function is the objective (define-by-run): ``trial.suggest_*`` per searched key ->
a TrainConfig -> ``train`` per level, reporting the validation metric; pruning raises
``TrialPruned``. Samplers, pruners, storages, heartbeats and retries are Optuna's.
"""

from ._objective import GridPointTaken, TrainObjective, train_level
from ._outcome import StageOutcome, leaderboard_rows, report_rows, tuning_plots, write_leaderboard
from ._run import TuneResult, run_final, run_study
from ._space import (
    PRUNERS,
    SAMPLERS,
    Fidelity,
    Param,
    SearchSpace,
    build_pruner,
    build_sampler,
    bundled_spaces,
    load_spaces,
    parse_fix,
    read_space,
)
from ._study import next_action, open_study, optimize_study, storage_url

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "Fidelity",
    "GridPointTaken",
    "Param",
    "SearchSpace",
    "StageOutcome",
    "TrainObjective",
    "TuneResult",
    "build_pruner",
    "build_sampler",
    "bundled_spaces",
    "leaderboard_rows",
    "load_spaces",
    "next_action",
    "open_study",
    "optimize_study",
    "parse_fix",
    "read_space",
    "report_rows",
    "run_final",
    "run_study",
    "storage_url",
    "train_level",
    "tuning_plots",
    "write_leaderboard",
]
