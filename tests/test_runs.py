"""Run folders and the test read: RunDir's states and its one resume rule, TestLedger's refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _fixtures_train import FAST, easy_cache, easy_images, fast_config  # noqa: F401  (fixtures)

from tellapart._errors import UserError
from tellapart.cli import main
from tellapart.data import Cache
from tellapart.evaluate import TestLedger, evaluate_run
from tellapart.runs import RunDir, RunState, Start
from tellapart.train import read_metrics, train


def test_states_follow_the_files_a_run_writes(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.state() is RunState.NEW  # missing
    run.path.mkdir()
    (run.path / ".config.yaml.tmp-123").write_text("half")  # an interrupted write is not a start
    assert run.state() is RunState.NEW
    run.config.write_text("epochs: 2\n")
    assert run.state() is RunState.STARTED
    run.checkpoints.mkdir()
    run.last.write_bytes(b"x")
    assert run.state() is RunState.RESUMABLE
    run.summary.write_text("{}")
    assert run.state() is RunState.FINISHED
    foreign = RunDir(tmp_path / "photos")
    foreign.path.mkdir()
    (foreign.path / "holiday.jpg").write_bytes(b"\xff\xd8")
    assert foreign.state() is RunState.FAILED


def test_begin_is_one_rule_for_every_caller(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.begin(resume=False) is Start.FRESH
    with pytest.raises(UserError, match="nothing to resume"):
        run.begin(resume=True)
    run.path.mkdir()
    run.config.write_text("epochs: 2\n")
    run.checkpoints.mkdir()
    run.best.write_bytes(b"best")  # killed between the first best.pt and the first last.pt
    with pytest.raises(UserError, match="--resume"):
        run.begin(resume=False)  # a plain run never overwrites
    (run.checkpoints / ".last.pt.tmp-4242").write_bytes(b"half")  # the kill came mid-write
    assert run.begin(resume=None) is Start.RESTART
    run.clear_started()
    assert run.state() is RunState.NEW and not run.checkpoints.exists()  # what it wrote is gone, nothing else
    foreign = RunDir(tmp_path / "photos")
    foreign.path.mkdir()
    (foreign.path / "holiday.jpg").write_bytes(b"\xff\xd8")
    for resume in (False, True, None):
        with pytest.raises(UserError, match="holds files but no run"):
            foreign.begin(resume=resume)
    assert (foreign.path / "holiday.jpg").read_bytes() == b"\xff\xd8"  # never deleted


def test_resuming_removes_the_temporary_files_of_a_killed_write(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("epochs: 2\n")
    run.last.write_bytes(b"whole")
    (run.checkpoints / ".last.pt.tmp-4242").write_bytes(b"half")
    (run.path / ".metrics.csv.tmp-4242").write_text("epoch\n")
    (run.path / "notes.txt").write_text("mine")  # a user's file is not ours to remove
    assert run.begin(resume=True) is Start.RESUME
    assert sorted(p.name for p in run.path.rglob("*") if p.is_file()) == ["config.yaml", "last.pt", "notes.txt"]


def _kill_during(point: str, cache: Cache, run: Path, epochs: int = 3) -> None:
    settings = [a for s in FAST for a in ("--set", s)]
    env = {**os.environ, "TELLAPART_FAULT": point, "TELLAPART_NO_REEXEC": "1"}
    argv = ["train", str(cache.path), "--out", str(run), "--epochs", str(epochs), "--quiet", *settings]
    killed = subprocess.run([sys.executable, "-m", "tellapart", *argv], env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 137, killed.stderr[-2000:]


def test_a_run_killed_after_its_first_best_pt_finishes_through_every_caller(easy_cache: Cache, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _kill_during("after_best_pt", easy_cache, run)
    assert RunDir(run).state() is RunState.STARTED
    cfg = fast_config(epochs=3)
    result = train(easy_cache, cfg, run, resume=None, progress=False)  # what ladders, trials and fit call
    assert result.summary["epochs"] == 3 and [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]
    again = train(easy_cache, cfg, run, resume=None, progress=False)  # finished: read back, not retrained
    assert again.summary == json.loads((run / "summary.json").read_text()) and again.best_epoch == result.best_epoch


def test_evaluate_refuses_an_unfinished_run_unless_allowed(easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _kill_during("after_metrics@1", easy_cache, run)  # stopped after epoch 1 of 3
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "has not finished training (epoch 1 of 3" in err and "--allow-unfinished" in err
    assert not (run / "test_reads.json").exists()  # refused before reading the test split
    assert main(["evaluate", str(run), "--allow-unfinished"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["unfinished"].startswith("evaluated before training finished (epoch 1 of 3")
    assert "evaluated before training finished" in (run / "report.html").read_text()
    assert len(json.loads((run / "test_reads.json").read_text())) == 1  # the read is recorded


def test_a_decision_folder_is_tested_once(easy_cache: Cache, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(easy_cache, fast_config(), run, progress=False)
    assert TestLedger.first_result(tmp_path / "decision") is None
    first = evaluate_run(run, report_dir=tmp_path)
    again = TestLedger.first_result(tmp_path, run=run)
    assert again is not None and again["accuracy"] == first["accuracy"] and again["report"] == first["report"]
    assert TestLedger.first_result(tmp_path, run=tmp_path / "another-run") is None  # a different choice is not "tested"
