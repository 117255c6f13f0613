"""The test split's one reader: which runs may be tested, every read recorded, "tested once" defined.

Model selection never sees the test split; :class:`TestLedger` is where that rule lives. It hands
out the held-out rows (to ``evaluate_run``, and to ``fit`` for the predictions of the models the
chosen one is compared with), records each read in the run's ``test_reads.json``, refuses a run
that has not finished training unless the caller allows it (the report then says so), and
answers "has this decision already been tested?" for tuning, recipes and fit, whose test result
is read back rather than measured twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tellapart._errors import UserError
from tellapart.data import Cache
from tellapart.runs import RunDir, RunState
from tellapart.train import read_checkpoint

__all__ = ["TestLedger", "UNFINISHED_NOTE"]

#: How a report marks a model evaluated before its training finished.
UNFINISHED_NOTE = "evaluated before training finished"


@dataclass(frozen=True)
class TestLedger:
    """The held-out splits of one cache, read on behalf of one run."""

    __test__ = False  # not a pytest test class, whatever its name

    cache: Cache
    run: RunDir

    def rows(self, split: str, *, allow_unfinished: bool = False) -> np.ndarray:
        """The rows of ``split`` in ascending order, for a run allowed to read them.

        Raises:
            UserError: the split is empty, or the run has not finished and ``allow_unfinished`` is off.
        """
        if split != "train":
            self.unfinished(allow=allow_unfinished)
        rows = np.sort(self.cache.indices(split))
        if len(rows) == 0:
            raise UserError(f"the {split} split of {self.cache.path} is empty")
        return rows

    def unfinished(self, *, allow: bool) -> str | None:
        """None for a finished run; for an unfinished one, the line the report shows (or an error)."""
        if not self.run.path.is_dir() or self.run.state() is RunState.FINISHED:
            return None  # (a checkpoint file given directly: nothing to say about its run)
        where = _progress(self.run)
        if not allow:
            raise UserError(
                f"{self.run.path} has not finished training ({where}; no summary.json): finish it with "
                f"'tellapart train ... --out {self.run.path} --resume', or test it anyway with --allow-unfinished "
                "(the report will say so)"
            )
        return f"{UNFINISHED_NOTE} ({where})"

    def record(self, split: str, n: int, accuracy: float) -> int:
        """Appends this read to the run's ``test_reads.json``; returns how many reads of ``split`` there have been."""
        path = self.run.test_reads
        reads = json.loads(path.read_text()) if path.is_file() else []
        reads.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "split": split, "n": n, "accuracy": accuracy})
        self.run.write_json(path, reads)
        return sum(1 for r in reads if r["split"] == split)

    @staticmethod
    def first_result(folder: str | Path, run: str | Path | None = None) -> dict[str, Any] | None:
        """The test result already written in ``folder`` (for ``run``, when given), with its report; else None.

        A decision folder (a fit, a tuning study's final model, a recipe) is tested once: a second
        call reads this back instead of reading the test split again.
        """
        out = RunDir(Path(folder))
        path = out.evaluation("test")
        if not path.is_file():
            return None
        previous = json.loads(path.read_text())
        if run is not None and previous.get("run") != str(run):
            return None
        return {**previous, "report": str(out.report("test"))}


def _progress(run: RunDir) -> str:
    """``epoch 2 of 6`` from the run's last (else best) checkpoint; ``no checkpoint`` without one."""
    for path in (run.last, run.best):
        if path.is_file():
            ckpt = read_checkpoint(path)
            planned = (ckpt.get("config") or {}).get("epochs")
            return f"epoch {ckpt.get('epoch')} of {planned}" if planned else f"epoch {ckpt.get('epoch')}"
    return "no checkpoint"
