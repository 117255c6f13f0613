"""Every use of Optuna's private internals, in one place.

Optuna has no public API for a study's storage, for the RDB storage inside its cache, or for
whether a trial ever sent a heartbeat; tellapart's stale-trial handling needs all three. Each
function here is one such access, checked against Optuna 4.9.0 and 5.0.0 (``pyproject.toml``
pins ``optuna>=4.9,<6``). ``tests/test_optuna_compat.py`` fails, naming the attribute, when an
installed Optuna no longer has what these functions read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

__all__ = [
    "rdb_of",
    "stale_trial_retry",
    "storage_of",
    "trial_id",
    "trials_with_heartbeat",
]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes (``Study._storage``; Optuna 4.9.0, 5.0.0)."""
    return study._storage


def rdb_of(storage: BaseStorage) -> RDBStorage | None:
    """The RDBStorage behind ``storage``, or None for another kind of storage.

    Optuna wraps an RDBStorage in a ``_CachedStorage`` whose ``_backend`` is the RDBStorage
    (Optuna 4.9.0, 5.0.0).
    """
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


def stale_trial_retry(study: optuna.Study) -> Callable[[optuna.Study, FrozenTrial], None] | None:
    """The storage's stale-trial callback (e.g. Optuna's retry), or None when it has none.

    ``get_heartbeat_stale_trial_callback`` is public on ``RDBStorage`` and ``_CachedStorage``
    but reached through the private ``Study._storage`` (Optuna 4.9.0, 5.0.0).
    """
    storage = storage_of(study)
    get = getattr(storage, "get_heartbeat_stale_trial_callback", None)
    return get() if get is not None else None


def trial_id(trial: FrozenTrial) -> int:
    """A trial's id in the storage, which storage calls take (``FrozenTrial._trial_id``; Optuna 4.9.0, 5.0.0)."""
    return int(trial._trial_id)


def trials_with_heartbeat(backend: RDBStorage, trial_ids: Iterable[int]) -> set[int]:
    """Those of ``trial_ids`` that recorded at least one heartbeat.

    Reads the ``trial_heartbeats`` table through ``optuna.storages._rdb.models.TrialHeartbeatModel``
    and ``RDBStorage.scoped_session`` (Optuna 4.9.0, 5.0.0): no public API says whether a trial
    ever sent a heartbeat.
    """
    from optuna.storages._rdb import models

    ids = list(trial_ids)
    if not ids:
        return set()
    table = models.TrialHeartbeatModel
    with backend.scoped_session() as session:
        rows: Any = session.query(table.trial_id).filter(table.trial_id.in_(ids))
        return {int(row[0]) for row in rows}
