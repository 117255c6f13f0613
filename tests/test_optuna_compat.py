"""The Optuna internals tellapart's stale-trial handling reads are still there (tellapart/tune/_optuna_compat.py).

If one of these fails after an Optuna upgrade, killed tuning workers' trials would no longer be
failed and retried: update the compat function named in the message, then the pin in pyproject.toml.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage

from tellapart.tune._optuna_compat import rdb_of, stale_trial_retry, storage_of, trial_id, trials_with_heartbeat


def _study(tmp_path: Path) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=60, grace_period=120,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    return optuna.create_study(storage=storage, study_name="compat")


@pytest.mark.parametrize(
    ("owner", "attribute", "used_by"),
    [
        ("optuna.storages._cached_storage:_CachedStorage", "get_heartbeat_stale_trial_callback", "stale_trial_retry"),
        ("optuna.storages:RDBStorage", "get_heartbeat_stale_trial_callback", "stale_trial_retry"),
        ("optuna.storages._rdb.models:TrialHeartbeatModel", "trial_id", "trials_with_heartbeat"),
    ],
)
def test_optuna_still_has_the_attributes_tellapart_reads(owner: str, attribute: str, used_by: str) -> None:
    module_name, _, class_name = owner.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"optuna {optuna.__version__} has no {owner} ({exc}); tellapart.tune._optuna_compat.{used_by.split()[0]} needs it")
    assert hasattr(cls, attribute), f"optuna {optuna.__version__}: {owner} has no {attribute!r}; update tellapart.tune._optuna_compat.{used_by}"


def test_compat_functions_reach_the_rdb_storage_and_its_heartbeats(tmp_path: Path) -> None:
    study = _study(tmp_path)
    version = optuna.__version__
    assert hasattr(study, "_storage"), f"optuna {version}: Study has no '_storage'; update tellapart.tune._optuna_compat.storage_of"
    storage = storage_of(study)
    assert hasattr(storage, "_backend"), f"optuna {version}: the study's storage has no '_backend' (the cache wrapper changed); update rdb_of"
    backend = rdb_of(storage)
    assert isinstance(backend, RDBStorage), f"optuna {version}: rdb_of found {type(backend).__name__}, not the RDBStorage"
    for attribute in ("scoped_session", "grace_period"):
        assert hasattr(backend, attribute), f"optuna {version}: RDBStorage has no {attribute!r}; update trials_with_heartbeat / _heartbeat_orphans"
    assert stale_trial_retry(study) is not None, f"optuna {version}: no stale-trial callback reached through the study's storage"

    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna: heartbeats are meant for optimize()
        trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    assert hasattr(frozen, "_trial_id"), f"optuna {version}: FrozenTrial has no '_trial_id'; update tellapart.tune._optuna_compat.trial_id"
    assert trial_id(frozen) == trial._trial_id
    assert trials_with_heartbeat(backend, [trial_id(frozen)]) == set(), "a trial that never beat was reported as beating"
    storage.record_heartbeat(trial_id(frozen))  # type: ignore[attr-defined]
    assert trials_with_heartbeat(backend, [trial_id(frozen)]) == {trial_id(frozen)}, (
        f"optuna {version}: a recorded heartbeat is not in the trial_heartbeats table as TrialHeartbeatModel reads it"
    )
    assert trials_with_heartbeat(backend, []) == set()


def test_a_storage_without_rdb_has_no_backend() -> None:
    assert rdb_of(optuna.storages.InMemoryStorage()) is None
