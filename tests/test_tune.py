"""Tuning: spaces validate, the grid runs once, successive halving promotes the best, studies
survive a killed worker and share workers over SQLite and PostgreSQL, and ``tellapart tune``
runs end to end with ``--final`` testing once.

Optuna plumbing is tested with a fake ``train`` (deterministic scores, milliseconds); one test
trains for real on a tiny synthetic cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tellapart._errors import UserError
from tellapart.train import save_checkpoint
from tellapart.tune import TrainObjective, load_spaces, open_study, optimize_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

GRID_8 = {
    "base": {"model": {"name": "grid_cnn"}},
    "space": {
        "model.args.conv_layers": {"type": "int", "low": 1, "high": 2},
        "model.args.width": {"type": "categorical", "choices": [8, 16, 32, 64]},
    },
    "sampler": {"name": "grid"},
}


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def _fake_train(score: Any, calls: list[dict[str, Any]] | None = None):  # type: ignore[no-untyped-def]
    """A stand-in for ``train``: records its arguments, writes a best checkpoint and a summary, scores ``score(cfg, trial)``."""

    def fake(cache, cfg, out, *, resume, on_epoch_end, progress, init_state_dict, train_splits):  # type: ignore[no-untyped-def]
        out = Path(out)
        rung = int(out.name.split("-")[1]) if out.name.startswith("level-") else 0
        trial = int((out.parent if out.name.startswith("level-") else out).name)
        if calls is not None:
            calls.append({"out": out, "fraction": cfg.train_fraction, "epochs": cfg.epochs, "init": init_state_dict, "splits": train_splits})
        save_checkpoint(out / "checkpoints" / "best.pt", {"state_dict": {"w": torch.tensor([float(rung)])}})
        acc = float(score(cfg, trial)) + 0.01 * rung
        summary = {"val_acc": acc, "val_loss": 1 - acc, "epochs": cfg.epochs, "best_epoch": cfg.epochs, "train_seconds": 0.01, "images_processed": 10}
        (out / "summary.json").write_text(json.dumps(summary))  # as train() leaves a finished run
        return SimpleNamespace(summary=summary)

    return fake


# --------------------------------------------------------------------------- spaces


def test_space_errors_name_the_key(tmp_path: Path) -> None:
    bad_key = {**GRID_8, "space": {"optim.lrr": {"type": "float", "low": 1e-4, "high": 1e-2}}}
    with pytest.raises(UserError, match="lrr"):
        load_spaces(bad_key)
    with pytest.raises(UserError, match="widht"):
        load_spaces({**GRID_8, "space": {"model.args.widht": {"type": "int", "low": 1, "high": 2}}})
    with pytest.raises(UserError, match="optim.lr: a grid cannot enumerate a float range"):
        load_spaces({**GRID_8, "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}})
    with pytest.raises(UserError, match="model.args.width: unknown option"):
        load_spaces({**GRID_8, "space": {"model.args.width": {"type": "int", "low": 1, "high": 2, "choices": [1]}}})
    with pytest.raises(UserError, match="unknown pruner"):
        load_spaces({**GRID_8, "pruner": {"name": "halving"}, "fidelity": {"kind": "epochs"}})
    with pytest.raises(UserError, match="not found"):
        load_spaces("no_such_space")
    # a study joined with another space is refused, not silently mixed
    url = _sqlite(tmp_path)
    open_study(load_spaces(GRID_8, name="s")[0], url, heartbeat_interval=1)
    other = {**GRID_8, "base": {"model": {"name": "grid_cnn"}, "epochs": 3}}
    with pytest.raises(UserError, match="another search space .*base"):
        open_study(load_spaces(other, name="s")[0], url, heartbeat_interval=1)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"bogus": 1}, r"space s: unknown key\(s\) bogus \(expected some of: base, direction, fidelity"),
        ({"space": {"model.args.width": {"type": "int", "low": 1, "high": 2, "lg": True}}}, r"unknown key\(s\) space\[model.args.width\].lg"),
        ({"space": {"model.args.width": {"type": "int", "low": True, "high": 2}}}, r"space\[model.args.width\].low must be a number"),
        ({"space": {"model.args.width": {"type": "int", "low": 1.5, "high": 2}}}, "model.args.width: an int range needs whole-number low and high"),
        ({"space": {"model.args.width": {"low": 1, "high": 2}}}, r"space\[model.args.width\].type is required"),
        ({"metric": "acc"}, "metric must be one of val_acc, val_loss"),
        ({"trials": 0}, "space s: trials must be a positive integer"),
        ({"fidelity": {"kind": "epochs", "fractions": [0.5, 1.0]}}, "fidelity.fractions applies to kind: data only"),
        ({"fidelity": {"kind": "data", "fractions": [0.5, 0.3]}}, "fidelity.fractions must increase"),
        ({"stages": [{"name": "a", "spaec": {}}]}, r"unknown key\(s\) stages\[1\].spaec"),
        ({"stages": [{"name": "a"}, {"name": "a"}]}, "stage names must be unique"),
    ],
)
def test_space_files_are_loaded_strictly(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_spaces({**GRID_8, **patch}, name="s")


def test_a_study_from_before_levels_were_named_resumes_its_rung_folders(tmp_path: Path) -> None:
    from tellapart.tune._rounds import level_dir

    assert level_dir(tmp_path, 0) == tmp_path / "level-0"
    (tmp_path / "rung-1").mkdir()
    assert level_dir(tmp_path, 1) == tmp_path / "rung-1"  # kept, so its finished run is read back, not retrained


def test_bundled_spaces_are_the_seed_searches() -> None:
    (s1,) = load_spaces("s1_grid")
    assert len(s1.grid_points()) == 27 and s1.fidelity.fractions == (0.3, 0.675, 1.0)
    assert s1.pruner == {"name": "synchronous_halving", "reduction_factor": 3}  # the seed's whole rounds: 27 -> 9 -> 3
    stage1, stage2 = load_spaces("s2_two_stage")
    assert len(stage1.grid_points()) == 6 and len(stage2.grid_points()) == 4
    assert stage1.config({"model.args.conv_layers": 2, "model.args.width": 32}).train_fraction == 0.3
    # stage 2 alone: --fix the stage-1 winner; the fully fixed stage 1 is skipped
    (only,) = load_spaces("s2_two_stage", fix=["model.args.conv_layers=3", "model.args.width=64"])
    cfg = only.config({"model.args.dropout": 0.5, "optim.lr": 0.01})
    assert (only.stage, cfg.model.args["conv_layers"], cfg.model.args["width"], cfg.model.args["dense_layers"]) == ("regularisation", 3, 64, 1)


# --------------------------------------------------------------------------- objective and pruning


def test_objective_with_a_fixed_trial(tmp_path: Path) -> None:
    (space,) = load_spaces(GRID_8)
    calls: list[dict[str, Any]] = []
    objective = TrainObjective(None, space, tmp_path, train_fn=_fake_train(lambda cfg, n: cfg.model.args["width"] / 100, calls), progress=False)
    trial = optuna.trial.FixedTrial({"model.args.conv_layers": 2, "model.args.width": 32})
    assert objective(trial) == pytest.approx(0.32)
    assert calls[0]["out"] == tmp_path / "trials" / "0" and calls[0]["splits"] == ("train",)
    assert trial.user_attrs["config"]["model"]["args"] == {"conv_layers": 2, "width": 32}
    assert trial.user_attrs["images_processed"] == 10


def test_successive_halving_on_data_subsets_promotes_the_best(tmp_path: Path) -> None:
    space_dict = {
        "base": {"model": {"name": "grid_cnn"}},
        "space": {"model.args.width": {"type": "int", "low": 1, "high": 9}},
        "sampler": {"name": "grid"},
        "pruner": {"name": "successive_halving", "reduction_factor": 3},
        "fidelity": {"kind": "data", "fractions": [0.2, 0.5, 1.0]},
    }
    (space,) = load_spaces(space_dict, name="sha")
    scores = [0.50, 0.90, 0.10, 0.70, 0.30, 0.80, 0.20, 0.60, 0.40]  # by trial number, the order they run
    calls: list[dict[str, Any]] = []
    objective = TrainObjective(None, space, tmp_path, train_fn=_fake_train(lambda cfg, n: scores[n], calls), progress=False)
    study = open_study(space, _sqlite(tmp_path), heartbeat_interval=1)
    optimize_study(study, objective, space, progress=False)

    trials = study.get_trials()
    assert sorted(t.params["model.args.width"] for t in trials) == list(range(1, 10))  # the grid, once
    reached = {t.number: t.user_attrs["rungs"][-1]["fraction"] for t in trials}
    # Trials 0 and 1 were the best so far at every rung; trial 5 made the top third of rung 1
    # (0.80 was second of six) but not of rung 2; the rest stopped on 20% of the data.
    assert {n for n, f in reached.items() if f == 1.0} == {0, 1}
    assert {n for n, f in reached.items() if f == 0.5} == {5}
    assert all(t.state == (TrialState.COMPLETE if reached[t.number] == 1.0 else TrialState.PRUNED) for t in trials)
    assert sorted(trials[0].intermediate_values) == [1, 3]  # rung steps; the top rung is the value
    # a promoted trial continues from its previous rung's best weights, on a bigger nested subset
    first = [c for c in calls if c["out"].parent.name == "0"]
    assert [c["fraction"] for c in first] == [0.2, 0.5, 1.0]
    assert first[0]["init"] is None and [float(c["init"]["w"]) for c in first[1:]] == [0.0, 1.0]
    assert sum(t.user_attrs["images_processed"] for t in trials) == 10 * len(calls)


def test_synchronous_halving_promotes_the_best_of_each_whole_round(tmp_path: Path) -> None:
    from tellapart.tune import StageOutcome, leaderboard_rows

    space_dict = {
        "base": {"model": {"name": "grid_cnn"}},
        "space": {"model.args.width": {"type": "int", "low": 1, "high": 9}},
        "sampler": {"name": "grid"},
        "pruner": {"name": "synchronous_halving", "reduction_factor": 3},
        "fidelity": {"kind": "data", "fractions": [0.2, 0.5, 1.0], "epochs": [2, 3, 4]},
    }
    (space,) = load_spaces(space_dict, name="sync")
    # the same scores, in the same order, as the asynchronous test above: here every trial of a
    # round is compared with all the others, so the late 0.80 (trial 5) goes on instead of the early 0.50
    scores = [0.50, 0.90, 0.10, 0.70, 0.30, 0.80, 0.20, 0.60, 0.40]
    calls: list[dict[str, Any]] = []
    objective = TrainObjective(None, space, tmp_path, train_fn=_fake_train(lambda cfg, n: scores[n], calls), progress=False)
    study = open_study(space, _sqlite(tmp_path), heartbeat_interval=1)
    optimize_study(study, objective, space, progress=False)

    trials = study.get_trials()
    by_round: dict[int, list[Any]] = {}
    for t in trials:
        by_round.setdefault(t.user_attrs.get("round", 0), []).append(t)
    assert sorted(t.params["model.args.width"] for t in by_round[0]) == list(range(1, 10))  # the grid, once
    assert all(t.state == TrialState.PRUNED and len(t.user_attrs["rungs"]) == 1 for t in by_round[0])
    # round 2: the best 3 of 9 on 20% of train (0.90, 0.80, 0.70); round 3: the best 1 of those 3
    assert sorted(t.user_attrs["promoted_from"] for t in by_round[1]) == [1, 3, 5]
    assert all(t.state == TrialState.PRUNED for t in by_round[1])
    (winner,) = by_round[2]
    assert winner.state == TrialState.COMPLETE and winner.params == trials[1].params
    assert winner.value == pytest.approx(0.92) and study.best_trial.number == winner.number
    # a promoted trial continues its parent's run: no rung trained twice, each from the previous rung's best weights
    run_1 = [c for c in calls if c["out"].parent.name == "1"]
    assert [(c["fraction"], c["epochs"]) for c in run_1] == [(0.2, 2), (0.5, 3), (1.0, 4)]
    assert run_1[0]["init"] is None and [float(c["init"]["w"]) for c in run_1[1:]] == [0.0, 1.0]
    assert len(calls) == 9 + 3 + 1
    # one leaderboard row per configuration; its images count every rung it trained, once
    rows = leaderboard_rows([StageOutcome(space, study, tmp_path)], tmp_path)
    assert len(rows) == 9 and rows[0]["trial"] == winner.number and rows[0]["fraction"] == 1.0 and rows[0]["epochs"] == 9
    assert [r["fraction"] for r in rows[1:3]] == [0.5, 0.5] and all(r["fraction"] == 0.2 for r in rows[3:])
    assert sum(r["images_processed"] for r in rows) == 10 * len(calls)


def test_synchronous_halving_needs_data_rungs_and_a_round_size(tmp_path: Path) -> None:
    from tellapart.tune._study import default_target

    with pytest.raises(UserError, match="synchronous_halving promotes between data levels"):
        load_spaces({**GRID_8, "pruner": {"name": "synchronous_halving"}, "fidelity": {"kind": "epochs"}})
    with pytest.raises(UserError, match="reduction_factor must be an integer >= 2"):
        load_spaces({**GRID_8, "pruner": {"name": "synchronous_halving", "reduction_factor": 1}, "fidelity": {"kind": "data", "fractions": [0.5, 1.0]}})
    random_space = {**GRID_8, "sampler": {"name": "random"}, "pruner": {"name": "synchronous_halving"}, "fidelity": {"kind": "data", "fractions": [0.5, 1.0]}}
    (space,) = load_spaces(random_space)
    with pytest.raises(UserError, match="--trials N"):
        default_target(space, None, budget=60.0)  # a budget alone never ends round 1
    assert default_target(space, 6, None) == 6


def test_leaderboard_and_best_trial_rank_complete_trials_by_value_then_loss(tmp_path: Path) -> None:
    from tellapart.tune import StageOutcome, leaderboard_rows
    from tellapart.tune._study import best_trial

    (space,) = load_spaces(GRID_8, name="ties")
    study = open_study(space, _sqlite(tmp_path), heartbeat_interval=1)
    # (val_acc, val_loss, epochs run): early stopping left trial 1 with fewer epochs; trials 2 and 3 tie on accuracy
    for acc, loss, epochs in [(0.90, 0.30, 10), (0.95, 0.20, 4), (0.97, 0.15, 10), (0.97, 0.10, 6)]:
        rung = {"rung": 0, "fraction": 1.0, "epochs": epochs, "val_acc": acc, "val_loss": loss, "run": "x"}
        study.add_trial(optuna.trial.create_trial(value=acc, user_attrs={"rungs": [rung]}))
    rows = leaderboard_rows([StageOutcome(space, study, tmp_path)], tmp_path)
    assert [r["trial"] for r in rows] == [3, 2, 1, 0]  # by accuracy, not by epochs run; the tie by lower loss
    assert best_trial(study).number == 3  # what --final retrains is the leaderboard's first


def test_epoch_fidelity_prunes_through_the_epoch_hook(tmp_path: Path) -> None:
    space_dict = {**GRID_8, "pruner": {"name": "threshold", "lower": 0.5}, "fidelity": {"kind": "epochs"}}
    (space,) = load_spaces(space_dict, name="epochs")

    def fake(cache, cfg, out, *, resume, on_epoch_end, progress, init_state_dict, train_splits):  # type: ignore[no-untyped-def]
        acc, epochs = cfg.model.args["width"] / 100, 0
        for epochs in range(1, cfg.epochs + 1):
            if on_epoch_end(epochs, {"epoch": epochs, "val_acc": acc, "val_loss": 1 - acc}):
                break
        return SimpleNamespace(summary={"val_acc": acc, "val_loss": 1 - acc, "epochs": epochs, "best_epoch": epochs, "train_seconds": 0.0, "images_processed": epochs})

    study = open_study(space, _sqlite(tmp_path), heartbeat_interval=1)
    optimize_study(study, TrainObjective(None, space, tmp_path, train_fn=fake, progress=False), space, progress=False)
    for t in study.get_trials():
        wide = t.params["model.args.width"] == 64
        assert t.state == (TrialState.COMPLETE if wide else TrialState.PRUNED)
        assert t.user_attrs["rungs"][0]["epochs"] == (10 if wide else 1)  # pruned after its first epoch


def test_a_failing_grid_point_is_recorded_and_the_study_still_ends(tmp_path: Path) -> None:
    (space,) = load_spaces(GRID_8, name="fails")

    def score(cfg, n):  # type: ignore[no-untyped-def]
        if cfg.model.args == {"conv_layers": 2, "width": 64}:
            raise UserError("model too big for 16 px")
        return cfg.model.args["width"] / 100

    study = open_study(space, _sqlite(tmp_path), heartbeat_interval=1)
    optimize_study(study, TrainObjective(None, space, tmp_path, train_fn=_fake_train(score), progress=False), space, progress=False)
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["COMPLETE"] * 7 + ["FAIL"]  # the failed point is not run again and again
    (failed,) = study.get_trials(states=(TrialState.FAIL,))
    assert "model too big" in failed.user_attrs["error"]


def test_a_trial_killed_before_its_first_heartbeat_is_retried(tmp_path: Path) -> None:
    """A worker killed between Optuna's ask and the first heartbeat left a RUNNING trial forever."""
    (space,) = load_spaces(GRID_8, name="orphan")
    study = open_study(space, _sqlite(tmp_path), heartbeat_interval=1, grace_period=1)
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna: heartbeats are meant for optimize()
        orphan = study.ask()  # what a killed worker leaves: RUNNING, no heartbeat, no params yet
    time.sleep(1.5)
    done = optimize_study(study, TrainObjective(None, space, tmp_path, train_fn=_fake_train(lambda cfg, n: 0.5), progress=False), space, progress=False, poll_s=0.2, budget=60)
    trials = study.get_trials()
    assert study.get_trials()[orphan.number].state == TrialState.FAIL  # failed as stale, not left RUNNING
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len(_grid_covered_once(study)) == 8, done.reason  # and the whole grid still finished, each point once


# --------------------------------------------------------------------------- workers


WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from types import SimpleNamespace
    import optuna
    from tellapart.tune import TrainObjective, load_spaces, open_study, optimize_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space_file, url, name, out, delay, ready_dir, n_ready = sys.argv[1:8]
    (space,) = load_spaces(space_file)
    study = open_study(space, url, study_name=name, heartbeat_interval=1, grace_period=2)
    if ready_dir != "-":  # start trials together, so both workers really compete
        Path(ready_dir, str(os.getpid())).touch()
        while len(os.listdir(ready_dir)) < int(n_ready):
            time.sleep(0.05)

    def fake_train(cache, cfg, out, *, resume, on_epoch_end, progress, init_state_dict, train_splits):
        out.mkdir(parents=True, exist_ok=True)
        (out / "pid").write_text(str(os.getpid()))
        with open(out / "trained.log", "a") as log:  # one line per time this run is trained
            log.write(f"{os.getpid()}\\n")
        time.sleep(float(delay))
        acc = cfg.model.args["conv_layers"] / 10 + cfg.model.args["width"] / 1000
        summary = {"val_acc": acc, "val_loss": 1 - acc, "epochs": 1, "best_epoch": 1, "train_seconds": 0.0, "images_processed": 1}
        (out / "summary.json").write_text(json.dumps(summary))  # as train() leaves a finished run
        return SimpleNamespace(summary=summary)

    objective = TrainObjective(None, space, out, train_fn=fake_train, progress=False)
    result = optimize_study(study, objective, space, poll_s=0.2, progress=False)
    print(json.dumps({"trials_run": result.trials_run}))
    """
)


def _worker(
    tmp_path: Path, url: str, name: str, *, delay: float, ready: Path | None = None, n_ready: int = 0, space: dict[str, Any] = GRID_8
) -> subprocess.Popen[str]:
    script, space_file = tmp_path / "worker.py", tmp_path / "grid8.yaml"
    script.write_text(WORKER)
    space_file.write_text(json.dumps(space))  # JSON is YAML
    args = [str(space_file), url, name, str(tmp_path / "study"), str(delay), str(ready or "-"), str(n_ready)]
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _grid_covered_once(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    points = [tuple(sorted(t.params.items())) for t in complete]
    assert len(points) == len(set(points)) == 8, points  # every grid point, none twice
    others = [t for t in study.get_trials() if t.state not in (TrialState.COMPLETE,)]
    assert all(t.state == TrialState.FAIL for t in others)  # nothing left running or queued
    return complete


@pytest.mark.slow
def test_killed_worker_resumes_without_losing_or_repeating_trials(tmp_path: Path) -> None:
    url, name = _sqlite(tmp_path), "grid8"
    # long trials make the kill land inside a trial that has a heartbeat; a worker killed in the
    # instant between asking for a trial and its first heartbeat leaves a trial Optuna cannot see as stale
    first = _worker(tmp_path, url, name, delay=1.0)
    study = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            study = optuna.load_study(study_name=name, storage=url)
        except KeyError:
            continue
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING and t.params]
        if len(done) >= 2 and running:
            break
    assert study is not None, first.communicate()[1][-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = {t.number: (t.params, t.value) for t in study.get_trials() if t.state == TrialState.COMPLETE}
    killed = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert len(before) >= 2 and len(killed) == 1

    _finish(_worker(tmp_path, url, name, delay=0.05))
    complete = _grid_covered_once(study)
    after = {t.number: (t.params, t.value) for t in complete}
    assert all(after[n] == v for n, v in before.items())  # finished trials kept as they were
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1
    if killed[0].user_attrs.get("run_dir"):  # it had recorded its run folder before the kill: resumed in place
        assert retry[0].user_attrs["run_dir"] == f"trials/{killed[0].number}"
    assert study.get_trials()[killed[0].number].state == TrialState.FAIL


def _two_workers(tmp_path: Path, url: str, name: str) -> None:
    ready = tmp_path / "ready"
    ready.mkdir()
    workers = [_worker(tmp_path, url, name, delay=0.2, ready=ready, n_ready=2) for _ in range(2)]
    runs = [json.loads(_finish(w).strip().splitlines()[-1])["trials_run"] for w in workers]
    study = optuna.load_study(study_name=name, storage=url)
    complete = _grid_covered_once(study)
    pids = {(tmp_path / "study" / t.user_attrs["run_dir"] / "pid").read_text() for t in complete}
    assert len(pids) == 2 and min(runs) >= 1  # both workers trained, together exactly the grid
    assert all("duplicate_of" in t.user_attrs for t in study.get_trials(states=(TrialState.FAIL,)))


@pytest.mark.slow
def test_two_workers_share_a_sqlite_study(tmp_path: Path) -> None:
    _two_workers(tmp_path, _sqlite(tmp_path), "grid8")


@pytest.mark.slow
def test_two_workers_share_synchronous_halving_rounds(tmp_path: Path) -> None:
    space = {**GRID_8, "pruner": {"name": "synchronous_halving", "reduction_factor": 2}, "fidelity": {"kind": "data", "fractions": [0.5, 1.0]}}
    url, name = _sqlite(tmp_path), "sync8"
    ready = tmp_path / "ready"
    ready.mkdir()
    workers = [_worker(tmp_path, url, name, delay=0.2, ready=ready, n_ready=2, space=space) for _ in range(2)]
    runs = [json.loads(_finish(w).strip().splitlines()[-1])["trials_run"] for w in workers]
    study = optuna.load_study(study_name=name, storage=url)
    trials = [t for t in study.get_trials() if "duplicate_of" not in t.user_attrs]
    first = [t for t in trials if "round" not in t.user_attrs]
    second = [t for t in trials if t.user_attrs.get("round") == 1]
    assert len(first) == 8 and len({tuple(sorted(t.params.items())) for t in first}) == 8  # the grid, once, in round 1
    assert all(t.state == TrialState.PRUNED for t in first)
    # round 2 started only after all of round 1: the best half (acc = layers/10 + width/1000: the 2-layer ones)
    assert sorted(t.params["model.args.width"] for t in second if t.params["model.args.conv_layers"] == 2) == [8, 16, 32, 64]
    assert len(second) == 4 and all(t.state == TrialState.COMPLETE for t in second)
    assert min(t.datetime_start for t in second) >= max(t.datetime_complete for t in first)
    assert all(t.state == TrialState.FAIL for t in study.get_trials() if "duplicate_of" in t.user_attrs)
    # every rung of every configuration trained exactly once, by one of the two workers
    logs = sorted((tmp_path / "study" / "trials").glob("*/level-*/trained.log"))
    assert len(logs) == 8 + 4 and all(len(log.read_text().split()) == 1 for log in logs)
    assert len({log.read_text() for log in logs}) == 2 and min(runs) >= 1


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path: Path) -> None:
    url = os.environ.get("TELLAPART_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("TELLAPART_TEST_POSTGRES_URL is unset in CI: .ci/run starts PostgreSQL and exports it")
        pytest.skip("set TELLAPART_TEST_POSTGRES_URL=postgresql+psycopg2://USER:PASS@127.0.0.1/DB to run against PostgreSQL")
    name = f"grid8-{uuid.uuid4().hex[:8]}"
    try:
        _two_workers(tmp_path, url, name)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def faces_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tellapart.data import PrepareConfig, Preprocess, SynthConfig, open_source, prepare, synth_faces

    tmp = tmp_path_factory.mktemp("tune-faces")
    synth_faces(tmp / "data", SynthConfig(pairs=30, size=32), progress=False)
    cfg = PrepareConfig(preprocess=Preprocess(size=16), workers=1)
    return prepare(open_source(tmp / "data", kind="paired"), tmp / "cache", cfg, progress=False).path


@pytest.mark.slow
def test_tune_end_to_end_then_final(faces_cache: Path, tmp_path: Path) -> None:
    from tellapart.cli import main

    space = tmp_path / "tiny.yaml"
    space.write_text(
        textwrap.dedent(
            """
            base: {model: {name: grid_cnn}, epochs: 1, batch_size: 16, device: cpu, precision: fp32, threads: 1, checkpoint_every_s: 0}
            space:
              model.args.conv_layers: {type: int, low: 1, high: 2}
              model.args.width: {type: categorical, choices: [4, 8]}
            sampler: {name: grid}
            pruner: {name: successive_halving, reduction_factor: 2}
            fidelity: {kind: data, fractions: [0.5, 1.0]}
            """
        )
    )
    study = tmp_path / "study"
    argv = ["tune", str(faces_cache), "--space", str(space), "--out", str(study), "--quiet"]
    assert main(argv) == 0
    board = json.loads((study / "leaderboard.json").read_text())
    assert len(board) == 4 and board[0]["rank"] == 1 and board[0]["state"] == "complete"
    assert all(r["images_processed"] > 0 for r in board)
    html = (study / "report.html").read_text()
    assert 'id="leaderboard"' in html and "data:image/png;base64," in html and "Validation loss per trial" in html
    assert not (study / "final").exists()  # no test split read without --final

    assert main([*argv, "--final"]) == 0
    metrics = json.loads((study / "final" / "metrics.json").read_text())
    assert metrics["split"] == "test" and (study / "final" / "report.html").is_file()
    assert 'id="leaderboard"' in (study / "final" / "report.html").read_text()
    env = json.loads((Path(metrics["run"]) / "environment.json").read_text())
    assert env["train_splits"] == ["train", "val"] and env["val_images"] == 0
    assert main([*argv, "--final"]) == 0  # a second --final does not read the test split again
    reads = json.loads((Path(metrics["run"]) / "test_reads.json").read_text())
    assert [r["split"] for r in reads] == ["test"]
