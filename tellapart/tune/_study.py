"""Studies in an RDB storage that any number of workers join, survive kills and finish exactly.

* Storage: ``sqlite:///STUDY/study.db`` by default, or any SQLAlchemy URL (PostgreSQL for workers
  on several machines). ``load_if_exists`` lets a second ``tellapart tune`` join as a worker.
* A killed worker leaves its trial RUNNING; Optuna's heartbeat marks it failed once it has been
  silent for ``grace_period`` seconds and ``RetryHeartbeatStaleTrialCallback`` queues it again
  (same values, same grid point), so it resumes from its checkpoints. A trial stopped by Ctrl-C is
  marked failed by Optuna; the next worker queues it again with the same callback.
* ``trials`` counts the study's finished trials (complete or pruned) over all workers. Before each
  trial a worker checks what is left: queued retries first, then new trials while the target
  (and, for a grid, an unstarted point) remains; when only other workers' trials are left it
  waits for them, so the last worker out writes the full leaderboard and a killed peer's trial
  is never lost.
* Synchronous halving (``_rounds``): ``trials`` counts round 0; when a round has finished in
  every worker, the worker that sees it first queues the next round.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import ArgumentError

from tellapart._errors import UserError

from ._objective import GridPointTaken
from ._optuna_compat import rdb_of, stale_trial_retry, storage_of, trial_id, trials_with_heartbeat
from ._rounds import is_synchronous, next_round, queue_round, round_of, tie_break
from ._space import SearchSpace, build_pruner, build_sampler, params_key

__all__ = ["open_study", "optimize_study", "storage_url", "StudyProgress"]

#: Exceptions that fail one trial, not the worker: bad config points, out-of-memory, NaNs.
_TRIAL_ERRORS = (UserError, RuntimeError, ValueError, FloatingPointError, GridPointTaken)
_MAX_FAILURES_IN_A_ROW = 5  # then the worker stops: something is wrong with every trial (a grid ends anyway)
_SPACE_ATTR = "tellapart_space"


def storage_url(out: str | Path, storage: str | None = None) -> str:
    """``storage``, or the SQLite file ``OUT/study.db``."""
    return storage or f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return url.split("@")[-1]


def open_study(
    space: SearchSpace,
    storage: str,
    *,
    study_name: str | None = None,
    heartbeat_interval: int = 30,
    grace_period: int | None = None,
    max_retry: int = 3,
) -> optuna.Study:
    """Creates the study, or joins it when it exists (then its space must be the same).

    Args:
        space: the search space (gives sampler, pruner and direction).
        storage: a SQLAlchemy URL, e.g. ``sqlite:///study.db`` or ``postgresql+psycopg2://u:p@host/db``.
        study_name: name in the storage (default: ``space.name``).
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds of silence after which a RUNNING trial counts as killed and is
            retried (default: 4 heartbeats; keep it well above the longest pause of the process).
        max_retry: retries of one trial after its workers were killed.
    """
    name = study_name or space.name
    if storage.startswith("sqlite"):
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}  # seconds a worker waits for another's write lock
    else:
        engine_kwargs = {"pool_pre_ping": True}  # a long trial outlives idle server connections
    study: optuna.Study | None = None
    for attempt in range(3):  # two workers creating the same new database can collide once
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
                rdb = RDBStorage(
                    storage,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period or 4 * heartbeat_interval,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                )
            study = optuna.create_study(
                storage=rdb, study_name=name, sampler=build_sampler(space), pruner=build_pruner(space),
                direction=space.direction, load_if_exists=True,
            )
            break
        except ModuleNotFoundError as exc:
            raise UserError(f"storage {_safe(storage)} needs the database driver {exc.name!r} (pip install psycopg2-binary for PostgreSQL)") from None
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many errors, as one clear message
            if attempt == 2 or isinstance(exc, ArgumentError):
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                raise UserError(f"cannot open the study storage {_safe(storage)}: {type(exc).__name__}: {first_line}") from None
            time.sleep(0.5 + attempt)
    assert study is not None
    stored = study.user_attrs.get(_SPACE_ATTR)
    mine = space.to_dict()
    if stored is None:
        study.set_user_attr(_SPACE_ATTR, mine)
    elif stored != mine:
        differs = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
        raise UserError(
            f"study {name!r} in {_safe(storage)} was created from another search space (differs in: "
            f"{', '.join(differs)}); use another --study-name or --out"
        )
    return study


@dataclass
class StudyProgress:
    """What one worker did (the study itself holds every worker's trials)."""

    trials_run: int = 0
    reason: str = ""  # why the worker stopped


Action = Literal["run", "wait", "done"]


def _effective_params(t: FrozenTrial) -> dict[str, Any]:
    return dict(t.params or t.system_attrs.get("fixed_params") or {})


def next_action(study: optuna.Study, space: SearchSpace, target: int) -> tuple[Action, str]:
    """What a worker should do now: run a trial, wait for other workers' trials, or stop."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return "run", "a queued trial"
    # the sampler's trials; later rounds of synchronous halving come from promotion, not the target
    live = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED) and round_of(t) == 0]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    more = len(live) < target
    if more and space.is_grid:
        # A point counts as covered by a trial in any state: a failed point is not run again
        # (Optuna's GridSampler counts it visited); killed and interrupted ones come back queued.
        covered = {params_key(_effective_params(t)) for t in trials if _effective_params(t)}
        # Trials that hold a point not read yet: started, or killed before reading it (and not retried).
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        drawing = sum(
            1 for t in trials
            if not _effective_params(t) and (t.state == TrialState.RUNNING or (t.state == TrialState.FAIL and t.number not in retried))
        )
        more = len(space.grid_points() - covered) - drawing > 0
    if more:
        return "run", "a new trial"
    if running:
        return "wait", f"{len(running)} trial(s) still running in other workers"
    finished = sum(1 for t in live if t.state != TrialState.RUNNING)
    whole = space.is_grid and finished >= len(space.grid_points())
    return "done", f"the study has {finished} finished trial(s)" + (" (the whole grid)" if whole else "")


def _requeue_interrupted(study: optuna.Study) -> None:
    """Queues again, once, each trial a Ctrl-C stopped (Optuna marked it failed), as a killed one is."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    retry = stale_trial_retry(study)
    for t in trials:
        if retry is not None and t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            retry(study, t)


def _heartbeat_orphans(study: optuna.Study) -> list[int]:
    """Gives one heartbeat to each RUNNING trial that never had one and started over a grace period ago.

    A worker killed between Optuna's ``ask`` and its trial's first heartbeat (a few milliseconds)
    leaves a RUNNING trial that Optuna's stale-trial check never sees, since it only fails trials
    whose last heartbeat is old. With one heartbeat recorded, the trial goes stale one grace period
    later and is failed and retried like any killed trial. Returns the trial ids given a heartbeat.
    """
    storage = storage_of(study)
    backend = rdb_of(storage)
    grace = backend.grace_period if backend is not None else None
    if backend is None or grace is None:
        return []
    now = datetime.datetime.now()  # Optuna stamps datetime_start with the local clock
    old = [
        trial_id(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace
    ]
    beating = trials_with_heartbeat(backend, old)
    orphans = [number for number in old if number not in beating]
    for number in orphans:
        storage.record_heartbeat(number)  # type: ignore[attr-defined]
    return orphans


def _fail_stale(study: optuna.Study) -> None:
    _heartbeat_orphans(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _promote(study: optuna.Study, space: SearchSpace, progress: bool) -> bool:
    """Queues the next round of synchronous halving when the current one has finished."""
    step = next_round(study, space)
    if step is None:
        return False
    round_, parents, ended = step
    queue_round(study, round_, parents)
    if progress:
        fraction = space.fidelity.fractions[round_]
        print(f"[tune {space.name}] round {round_ + 1}: the best {len(parents)} of {ended} go on to {fraction:g} of train "
              f"(trials {', '.join(f'#{t.number}' for t in parents)})", file=sys.stderr, flush=True)
    return True


def default_target(space: SearchSpace, trials: int | None, budget: float | None) -> int:
    """The number of finished trials to aim for: ``trials``, the space's, the grid's size."""
    target = trials or space.trials
    if space.is_grid:
        size = len(space.grid_points())
        return min(target, size) if target else size
    if target:
        return target
    if is_synchronous(space):
        raise UserError(f"space {space.name}: synchronous_halving promotes once a round has finished; give the round's size with --trials N (or 'trials:' in the space)")
    if budget:
        return sys.maxsize  # until the budget ends
    raise UserError(f"space {space.name}: sampler {space.sampler['name']} needs --trials N or --budget SECONDS (or 'trials:' in the space)")


def optimize_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    space: SearchSpace,
    *,
    trials: int | None = None,
    budget: float | None = None,
    deadline: float | None = None,
    poll_s: float | None = None,
    progress: bool = True,
) -> StudyProgress:
    """Runs trials of ``study`` in this process until the study's target or the budget is reached.

    Args:
        study: from :func:`open_study` (an RDB storage with heartbeats).
        objective: ``trial -> value`` (a :class:`~tellapart.tune.TrainObjective`).
        space: the study's search space.
        trials: finished (complete or pruned) trials the study should have, over all workers.
        budget: wall-clock seconds for this worker; a trial started in time runs to its end.
        deadline: ``time.monotonic()`` value to stop at (instead of ``budget``).
        poll_s: seconds between checks while waiting for other workers (default: 5).
    """
    target = default_target(space, trials, budget if budget is not None else (1.0 if deadline is not None else None))
    if budget is not None:
        deadline = time.monotonic() + budget
    poll = poll_s or 5.0
    result = StudyProgress()
    failures: list[FrozenTrial] = []
    duplicates = 0  # grid points drawn in a row that another trial already covers
    last_message = ""

    def note(study_: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal duplicates
        result.trials_run += 1
        duplicates = duplicates + 1 if "duplicate_of" in trial.user_attrs else 0
        if trial.state == TrialState.FAIL and "duplicate_of" not in trial.user_attrs:
            failures.append(trial)
        elif trial.state != TrialState.FAIL:
            failures.clear()

    while True:
        _fail_stale(study)
        _requeue_interrupted(study)
        if deadline is not None and time.monotonic() >= deadline:
            result.reason = "the time budget is spent"
            break
        action, why = next_action(study, space, target)
        if action == "done" and is_synchronous(space) and _promote(study, space, progress):
            continue
        if action == "done":
            result.reason = why
            break
        if action == "wait":
            if why != last_message and progress:
                print(f"[tune {space.name}] waiting: {why}", file=sys.stderr, flush=True)
            last_message = why
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))
            continue
        last_message = ""
        study.optimize(objective, n_trials=1, catch=_TRIAL_ERRORS, callbacks=[note])
        if duplicates >= 3:  # safety net: the sampler keeps drawing points other trials hold
            result.reason = "the grid's remaining points are held by other trials"
            break
        if len(failures) >= _MAX_FAILURES_IN_A_ROW and not space.is_grid:
            error = failures[-1].user_attrs.get("error", "see the log above")
            raise UserError(f"{len(failures)} trials in a row failed; the last: {error}")
    if progress:
        print(f"[tune {space.name}] worker done: {result.reason}; it ran {result.trials_run} trial(s)", file=sys.stderr, flush=True)
    return result


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial by the study's value; equal values: lower validation loss, then the earlier trial.

    (Optuna's ``study.best_trial`` takes the first of equal values; accuracy on a few hundred
    validation images ties often.)
    """
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None and not math.isnan(t.value)]
    if not complete:
        return None
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda t: (sign * float(t.value), tie_break(t), t.number))  # type: ignore[arg-type]


def study_trials(study: optuna.Study) -> Sequence[FrozenTrial]:
    return study.get_trials(deepcopy=False)
