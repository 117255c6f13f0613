"""Run folders: the one owner of a run folder's layout, its state and its resume-or-restart rule.

Every stage that trains or reads a run (``train``, the ladder, tuning trials, recipes, ``fit``,
``evaluate``, ``predict``, ``export``, ``serve``) asks a :class:`RunDir` for its files instead of
spelling their names, and :meth:`RunDir.begin` is the single rule for what a command does with a
folder that already holds something::

    config.yaml          resolved TrainConfig (+ the cache it read); written first
    environment.json     versions, device, precision, seed, cache fingerprint, git commit
    metrics.csv          one row per epoch
    tb/                  TensorBoard event files
    checkpoints/last.pt  everything needed to resume
    checkpoints/best.pt  the weights of the best validation epoch
    summary.json         written when the run ends: its presence means "finished"
    test_reads.json      every read of a held-out split, by ``evaluate``
    metrics.json         the test evaluation (``metrics-val.json`` for another split)
    report.html          the evaluation report

Writes go through :func:`tellapart._files.atomic_write` (a synced temporary file, then a rename),
so a kill never leaves half a file under one of these names.
"""

from __future__ import annotations

import enum
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tellapart._errors import UserError
from tellapart._files import atomic_write

__all__ = ["RunDir", "RunState", "Start"]


class RunState(enum.Enum):
    """What a run folder holds, from its files alone."""

    NEW = "new"  # missing or empty (temporary files of an interrupted write do not count)
    STARTED = "started"  # config.yaml written, killed before the first last.pt: starts over from that config
    RESUMABLE = "resumable"  # last.pt written, no summary.json yet: continues where it stopped
    FINISHED = "finished"  # summary.json written: read back, never retrained
    FAILED = "failed"  # holds files but no config.yaml: not a run tellapart can continue (foreign or wrecked)


class Start(enum.Enum):
    """What :meth:`RunDir.begin` decided a command does with the folder."""

    FRESH = "fresh"  # train from the first epoch
    RESUME = "resume"  # continue from checkpoints/last.pt
    RESTART = "restart"  # started before but never checkpointed: cleared, trained from its own config.yaml
    DONE = "done"  # finished: read summary.json back


_STARTED_FILES = ("config.yaml", "environment.json", "metrics.csv", "summary.json")


@dataclass(frozen=True)
class RunDir:
    """A run folder: file names, state, atomic writes and the resume-or-restart rule."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ----------------------------------------------------------------- layout
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def environment(self) -> Path:
        return self.path / "environment.json"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def test_reads(self) -> Path:
        return self.path / "test_reads.json"

    def evaluation(self, split: str = "test") -> Path:
        """``metrics.json`` for the test split, ``metrics-<split>.json`` for another."""
        return self.path / ("metrics.json" if split == "test" else f"metrics-{split}.json")

    def report(self, split: str = "test") -> Path:
        """``report.html`` for the test split, ``report-<split>.html`` for another."""
        return self.path / ("report.html" if split == "test" else f"report-{split}.html")

    # ----------------------------------------------------------------- state
    def state(self) -> RunState:
        """The folder's state from its files (see :class:`RunState`)."""
        if self.summary.is_file():
            return RunState.FINISHED
        if self.last.is_file():
            return RunState.RESUMABLE
        if self.config.is_file():
            return RunState.STARTED
        if not self.path.exists() or not any(p for p in self.path.iterdir() if not _is_temporary(p)):
            return RunState.NEW
        return RunState.FAILED

    def begin(self, *, resume: bool | None) -> Start:
        """The one resume-or-restart rule; clears what a never-checkpointed start left behind.

        Args:
            resume: True (``--resume``): continue a started run, refuse an empty folder. False (a
                new run): the folder must be new. None (ladders, trials, recipes, fit): whatever
                finishes the run: read a finished one back, resume, restart or start.

        Returns:
            What the caller does next. A RESTART has already removed the started files, so the
            caller trains from the config it reads (first) from :attr:`config`.
        """
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run folder {self.path} is not a folder; choose another --out")
        state = self.state()
        if state is RunState.FAILED:
            raise UserError(
                f"{self.path} holds files but no run (no config.yaml); choose a new --out, or move its files away"
            )
        if resume is False and state is not RunState.NEW:
            raise UserError(f"run folder {self.path} already holds files; resume it with --resume, or choose a new --out")
        if resume is True and state is RunState.NEW:
            raise UserError(f"nothing to resume in {self.path}: no checkpoints/last.pt (start it without --resume)")
        if state is RunState.FINISHED and (resume is None or not self.last.is_file()):
            return Start.DONE  # (with --resume and its last.pt, it "resumes" past its last epoch: a no-op)
        if state in (RunState.RESUMABLE, RunState.FINISHED):
            self.remove_temporary()  # half-written files of the killed process: never read, now gone
            return Start.RESUME
        if state is RunState.STARTED:
            return Start.RESTART
        return Start.FRESH

    def clear_started(self) -> None:
        """Removes what a run writes before its first ``last.pt``, and temporary files of interrupted writes.

        That is the config, ledger, curves and a first ``best.pt``; nothing else in the folder is touched
        (a caller keeps the config it needs by reading it first).
        """
        for name in _STARTED_FILES:
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)
        self.remove_temporary()
        if self.checkpoints.is_dir():
            self.best.unlink(missing_ok=True)
            if not any(self.checkpoints.iterdir()):
                self.checkpoints.rmdir()

    def remove_temporary(self) -> None:
        """Deletes the folder's own temporary files (``.NAME.tmp-PID``, here and in checkpoints/) left by killed writes."""
        for folder in (self.path, self.checkpoints):
            if folder.is_dir():
                for tmp in folder.iterdir():
                    if _is_temporary(tmp) and tmp.is_file():
                        tmp.unlink(missing_ok=True)

    # ----------------------------------------------------------------- reads and writes
    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json`` of a finished run, or None; an unreadable one is an error naming it."""
        return _read_json(self.summary)

    def write_json(self, path: Path, value: Any) -> None:
        """``value`` as indented JSON at ``path`` (inside this folder), atomically."""
        atomic_write(path, json.dumps(value, indent=2, default=str))

    def write_text(self, path: Path, text: str) -> None:
        atomic_write(path, text)


def _is_temporary(path: Path) -> bool:
    """A temporary file of :func:`tellapart._files.atomic_write` (``.NAME.tmp-PID``)."""
    return path.name.startswith(".") and ".tmp-" in path.name


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON (a damaged file); restore it, or remove it to redo that step") from None
