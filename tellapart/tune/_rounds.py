"""Synchronous successive halving: every trial of a round finishes before any is promoted.

Optuna's ``SuccessiveHalvingPruner`` is asynchronous: a trial goes on when it is in the top
1/eta of the trials that reached its level *so far*, so with one worker the first trials are
promoted easily and a good late one can be cut on a noisy first level. Optuna has no synchronous
variant (its pruners decide per trial, at report time); this one is built on its storage and
trial queue, and follows the seed's own procedure (every configuration on 30% of train, then the
best third on 67.5%, then the best third of those on all of it):

* Round 0 is the sampler's trials (the grid, or ``--trials`` of another sampler), each trained on
  the first level only; a trial ends PRUNED after reporting its value there.
* Once every trial of round k has finished, over all workers, a worker queues the best
  ``max(1, n // reduction_factor)`` again as trials of round k + 1: the same values, and the
  parent's run folder, so the new trial reads the parent's finished levels back and trains the
  next level from the best weights of level k. The last round's trials are COMPLETE.
* Two workers that reach a round's end at the same instant both queue it; the duplicate check
  of the objective lets one trial of each (values, round) run, as it does for grid points.

A space selects it with ``pruner: {name: synchronous_halving, reduction_factor: 3}`` and a data
fidelity (``fidelity: {kind: data, fractions: [...]}``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from ._space import SYNCHRONOUS_HALVING, SearchSpace, reduction_factor

__all__ = ["is_synchronous", "level_dir", "round_of", "level_metric", "tie_break", "next_round", "queue_round", "promoted_parents"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def is_synchronous(space: SearchSpace) -> bool:
    return space.pruner.get("name") == SYNCHRONOUS_HALVING


def round_of(trial: FrozenTrial | optuna.trial.BaseTrial) -> int:
    """The round a trial belongs to (0 for every trial a sampler drew)."""
    return int(trial.user_attrs.get("round", 0))


def level_dir(run_dir: Path, k: int) -> Path:
    """The run folder of level ``k`` of a trial: ``level-<k>``, or ``rung-<k>`` where a study
    started before levels were so named holds one (so it resumes rather than retrains)."""
    old = run_dir / f"rung-{k}"
    return old if old.is_dir() else run_dir / f"level-{k}"


def level_metric(trial: FrozenTrial, key: str, level: int | None = None) -> float | None:
    """A number the trial recorded for one of its levels (``None``: its last level), or None.

    Studies store the records as ``user_attrs["rungs"]``, each with its ``"rung"`` index: the
    keys existing studies hold, kept so that they resume.
    """
    records = [r for r in trial.user_attrs.get("rungs") or [] if level is None or r.get("rung") == level]
    value = records[-1].get(key) if records else None
    return None if value is None or math.isnan(float(value)) else float(value)


def tie_break(trial: FrozenTrial, level: int | None = None) -> float:
    """Between trials of equal value: the level's validation loss (lower is better; none: last)."""
    loss = level_metric(trial, "val_loss", level)
    return math.inf if loss is None else loss


def next_round(study: optuna.Study, space: SearchSpace) -> tuple[int, list[FrozenTrial], int] | None:
    """``(round, trials to promote into it, trials that ended the previous round)`` when the
    current round has finished and is not the last; else None.

    Call it when no trial is running or queued and the sampler's round-0 trials are all drawn.
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
        return None
    current = max((round_of(t) for t in trials), default=0)
    if current >= space.fidelity.levels - 1:
        return None
    ended = [
        (value, t) for t in trials
        if round_of(t) == current and t.state in _FINISHED and "duplicate_of" not in t.user_attrs
        and (value := level_metric(t, space.metric, current)) is not None
    ]
    if not ended:
        return None
    sign = -1.0 if space.direction == "maximize" else 1.0
    ranked = sorted(ended, key=lambda p: (sign * p[0], tie_break(p[1], current), p[1].number))  # best first; ties: lower val loss
    keep = max(1, len(ranked) // reduction_factor(space))
    return current + 1, [t for _, t in ranked[:keep]], len(ranked)


def queue_round(study: optuna.Study, round_: int, parents: list[FrozenTrial]) -> None:
    """Queues each parent again as a trial of ``round_`` that continues the parent's run."""
    for parent in parents:
        system: dict[str, Any] = {"fixed_params": dict(parent.params)}
        for key in ("grid_id", "search_space"):  # Optuna's GridSampler reads these after a trial
            if key in parent.system_attrs:
                system[key] = parent.system_attrs[key]
        user = {"round": round_, "promoted_from": parent.number, "run_dir": parent.user_attrs.get("run_dir") or f"trials/{parent.number}"}
        study.add_trial(create_trial(state=TrialState.WAITING, system_attrs=system, user_attrs=user))


def promoted_parents(trials: list[FrozenTrial]) -> set[int]:
    """Trials whose run a later round's trial continues (a leaderboard shows the later one)."""
    return {
        int(t.user_attrs["promoted_from"]) for t in trials
        if "promoted_from" in t.user_attrs and "duplicate_of" not in t.user_attrs
        and t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    }
