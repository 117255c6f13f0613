"""The training function as the Optuna objective: suggest -> config -> train (per level) -> value.

Each trial trains into ``OUT/trials/<number>`` (``level-<k>`` subfolders with data fidelity). A
level that finished is never retrained, and one with a checkpoint is resumed, so a trial retried
after its worker was killed continues where it stopped (the retry inherits the ``run_dir``
user attribute of the trial it repeats). In a synchronous-halving study a trial of round k trains
levels up to k only; a later round's trial continues its parent's folder (see ``_rounds``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tellapart._log import say as _say
from tellapart.data import Cache
from tellapart.runs import RunDir, RunState
from tellapart.train import TrainConfig, config_to_dict, read_checkpoint, train

from ._rounds import is_synchronous, level_dir, round_of
from ._space import SearchSpace

__all__ = ["GridPointTaken", "TrainObjective", "train_level"]

#: ``train``'s signature (tests pass a fake with the same keyword arguments).
TrainFn = Callable[..., Any]


class GridPointTaken(Exception):
    """Another trial already covers this grid point (two workers raced for the last ones)."""


class TrainObjective:
    """``objective(trial) -> validation metric`` for one search space.

    Args:
        cache: the prepared cache (or its folder) every trial trains on.
        space: the study's search space.
        out: the study folder; trials train into ``out/trials/<number>``.
        train_fn: the training function (``tellapart.train.train``; tests pass a fake).
        progress: print a line per trial and level and the trainer's epoch lines.
    """

    def __init__(self, cache: Cache | str | Path | None, space: SearchSpace, out: str | Path, *, train_fn: TrainFn = train, progress: bool = True) -> None:
        self.cache = cache
        self.space = space
        self.out = Path(out)
        self.train_fn = train_fn
        self.progress = progress

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        if trial.user_attrs.get("interrupted"):
            trial.set_user_attr("interrupted", False)  # a retry starts clean (it copies the attributes)
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # the next worker re-queues it (see _study)
            raise
        except (optuna.TrialPruned, GridPointTaken):
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise

    def _run(self, trial: optuna.trial.BaseTrial) -> float:
        space = self.space
        values = {p.key: p.suggest(trial) for p in space.params}
        round_ = round_of(trial)
        if (space.is_grid or round_ > 0) and isinstance(trial, optuna.Trial):
            _refuse_duplicate(trial)
        cfg = space.config(values)
        run_rel = str(trial.user_attrs.get("run_dir") or f"trials/{trial.number}")
        trial.set_user_attr("run_dir", run_rel)
        trial.set_user_attr("config", config_to_dict(cfg))
        run_dir = self.out / run_rel
        plan = space.level_plan(cfg)
        steps = space.steps()
        metric = space.metric
        levels: list[dict[str, Any]] = []
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items())
        init_from: Path | None = None
        stop_after = round_ if is_synchronous(space) else len(plan) - 1  # the last level this trial trains
        for k, (fraction, epochs) in enumerate(plan):
            last = k == len(plan) - 1
            level_path = level_dir(run_dir, k) if len(plan) > 1 else run_dir
            level_cfg = dataclasses.replace(cfg, train_fraction=fraction, epochs=epochs)
            if len(plan) == 1 or RunDir(level_path).state() is not RunState.FINISHED:
                _say(self.progress, f"[trial {trial.number}] {label}" + (f"  level {k + 1}/{len(plan)}: {fraction:g} of train, {epochs} epochs" if len(plan) > 1 else ""))
            pruned = False

            def report_epoch(epoch: int, row: dict[str, Any]) -> bool:
                nonlocal pruned
                if row.get(metric) is None:
                    return False
                trial.report(float(row[metric]), epoch)
                pruned = trial.should_prune()
                return pruned

            hook = report_epoch if space.fidelity.kind == "epochs" else None
            summary = train_level(self.train_fn, self.cache, level_cfg, level_path, init_from=init_from, on_epoch_end=hook, progress=self.progress)
            levels.append(_level_record(k, fraction, summary, level_path.relative_to(self.out)))
            _record(trial, levels)
            value = summary.get(metric)
            if value is None:
                raise ValueError(f"the run in {level_path} has no {metric} (is the validation split empty?)")
            if pruned:
                raise optuna.TrialPruned(f"pruned at epoch {summary.get('epochs')}")
            if space.fidelity.kind == "data" and not last:
                trial.report(float(value), steps[k])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after level {k + 1} ({fraction:g} of train)")
                if k == stop_after:  # synchronous halving: the round's end decides who goes on
                    _say(self.progress, f"[trial {trial.number}] round {k + 1} done: {metric} {value:.4f}; promotion when every trial of the round has finished")
                    raise optuna.TrialPruned(f"round {k + 1} ends after level {k + 1} ({fraction:g} of train)")
            init_from = RunDir(level_path).best if space.fidelity.warm_start else None
        return float(value)


def train_level(
    train_fn: TrainFn,
    cache: Any,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    init_from: Path | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], bool] | None = None,
    progress: bool = True,
    train_splits: tuple[str, ...] = ("train",),
) -> dict[str, Any]:
    """Trains one run (or reads it back when an earlier attempt finished it); returns its summary.

    The folder follows :meth:`tellapart.runs.RunDir.begin`: a run with a checkpoint is resumed, one
    left without (killed in its first minutes) starts again from its config. ``init_from`` is a checkpoint whose weights start a new run.
    """
    run = RunDir(run_dir)
    state = run.state()
    if state is RunState.FINISHED:
        return dict(run.read_summary() or {})
    resume = state is not RunState.NEW  # RunDir's rule: resume a checkpointed run, restart one that never checkpointed
    starts = state in (RunState.NEW, RunState.STARTED)  # no weights of its own yet
    init = read_checkpoint(init_from)["state_dict"] if (init_from is not None and starts and init_from.is_file()) else None
    result = train_fn(
        cache, cfg, run_dir, resume=resume, on_epoch_end=on_epoch_end, progress=progress,
        init_state_dict=init, train_splits=train_splits,
    )
    return dict(result.summary)


def _level_record(k: int, fraction: float, summary: dict[str, Any], run: Path) -> dict[str, Any]:
    return {
        "rung": k,  # the stored key keeps its old name: studies written before still resume
        "fraction": fraction,
        "epochs": summary.get("epochs"),
        "best_epoch": summary.get("best_epoch"),
        "val_acc": summary.get("val_acc"),
        "val_loss": summary.get("val_loss"),
        "train_seconds": summary.get("train_seconds"),
        "images_processed": summary.get("images_processed", 0),
        "params": summary.get("params"),
        "run": str(run),
    }


def _record(trial: optuna.trial.BaseTrial, levels: list[dict[str, Any]]) -> None:
    """What a leaderboard and a compute benchmark need, kept on the trial as it goes (two writes:
    each is a database commit)."""
    trial.set_user_attr("rungs", levels)  # stored key keeps its old name: existing studies resume
    trial.set_user_attr("images_processed", sum(r["images_processed"] or 0 for r in levels))


def _refuse_duplicate(trial: optuna.Trial) -> None:
    """A grid point runs once: a trial that drew a point another trial covers stops here.

    Optuna's GridSampler hands an unfinished point to a second worker once every point has
    started (its documented behaviour in distributed runs). The earlier trial keeps the point.
    Points are per round of synchronous halving: two workers may both queue a round.
    """
    mine, round_ = trial.params, round_of(trial)
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)):
        if other.number == trial.number or round_of(other) != round_:
            continue
        params = other.params or other.system_attrs.get("fixed_params") or {}
        if params == mine and (other.state != TrialState.RUNNING or other.number < trial.number):
            trial.set_user_attr("duplicate_of", other.number)
            raise GridPointTaken(f"trial {other.number} already covers {mine}")
