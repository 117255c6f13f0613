"""``run_study``: the whole ``tellapart tune`` command as one library call.

Study folder::

    study.db              the Optuna study (SQLite; or the --storage URL)
    trials/<n>/           each trial's run (level-<k>/ runs with data fidelity)
    <stage>/trials/<n>/   the same per stage of a multi-stage space
    leaderboard.csv/.json every trial: values, state, budget reached, val metrics, seconds, images
    best/                 the best trial evaluated on the validation split (metrics-val.json, report-val.html)
    report.html           leaderboard, best trial on validation, tuning plots
    final/                --final: the best configuration retrained on train+val, tested once
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tellapart._log import say as _say
from tellapart._errors import UserError
from tellapart.data import Cache
from tellapart.runs import RunDir
from tellapart.train import config_from_dict, read_metrics, train

from ._objective import TrainFn, TrainObjective, train_level
from ._outcome import StageOutcome, leaderboard_rows, report_rows, tuning_plots, write_leaderboard
from ._rounds import level_dir
from ._space import SearchSpace, load_spaces, parse_fix
from ._study import _safe, best_trial, open_study, optimize_study, storage_url

__all__ = ["TuneResult", "run_study", "run_final"]


@dataclass(frozen=True)
class TuneResult:
    out: Path  # the study folder
    storage: str  # the storage URL (password hidden)
    leaderboard: list[dict[str, Any]]  # every trial, ranked within its stage
    best: dict[str, Any] | None  # the best complete trial's row (last stage)
    report: Path | None  # report.html, when the best trial's run is in this folder
    final: dict[str, Any] | None  # --final: test metrics of the retrained best configuration


def run_study(
    cache: Cache | str | Path,
    space: str | Path | SearchSpace | Sequence[SearchSpace],
    out: str | Path,
    *,
    trials: int | None = None,
    budget: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    fix: Mapping[str, Any] | Sequence[str] = (),
    final: bool = False,
    progress: bool = True,
    heartbeat_interval: int = 30,
    grace_period: int | None = None,
    train_fn: TrainFn = train,
) -> TuneResult:
    """Creates or joins the study, runs trials until it is done, writes leaderboard and report.

    Args:
        cache: the prepared cache every trial trains on.
        space: a space file, a bundled name (``s1_grid``) or SearchSpace objects (one per stage).
        out: the study folder (trials, leaderboard, report; ``study.db`` unless ``storage``).
        trials: finished trials each study should have, over all workers (default: the space's;
            a grid: its size).
        budget: wall-clock seconds for this worker, over all stages.
        storage: SQLAlchemy URL of the study storage (default: ``sqlite:///OUT/study.db``).
        study_name: name in the storage (default: the space's name; stages append theirs).
        fix: ``key=value`` settings fixed in every stage (those keys are not searched).
        final: retrain the best configuration on train+val and test it once (``OUT/final``).
        heartbeat_interval: seconds between a trial's heartbeats; a trial silent for
            ``grace_period`` (default 4 heartbeats) belongs to a killed worker and is retried.
    """
    if isinstance(space, (str, Path)):
        spaces = load_spaces(space, fix=fix, name=study_name)
    else:
        fixed = parse_fix(fix) if not isinstance(fix, Mapping) else dict(fix)
        spaces = [s.fixed(fixed) if fixed else s for s in ([space] if isinstance(space, SearchSpace) else space)]
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    if budget is not None and budget <= 0:
        raise UserError(f"--budget must be a positive number of seconds, got {budget}")
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    if len(cache.indices("val")) == 0:
        raise UserError(f"cache {cache.path} has no validation split: tuning selects on val (prepare it with --val > 0)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url(out, storage)
    deadline = time.monotonic() + budget if budget else None
    stages: list[StageOutcome] = []
    winner: dict[str, Any] | None = None
    for k, stage_space in enumerate(spaces):
        if winner:
            stage_space = stage_space.fixed(winner)  # the previous stage's winning values
        stage_out = out if len(spaces) == 1 else out / str(stage_space.stage)
        name = study_name if study_name and len(spaces) == 1 and not isinstance(space, (str, Path)) else stage_space.name
        study = open_study(stage_space, url, study_name=name, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        if not study.get_trials(deepcopy=False) and (stage_out / "trials").is_dir() and any((stage_out / "trials").iterdir()):
            raise UserError(f"{stage_out / 'trials'} holds runs of another study (is its study.db gone?); use a new --out")
        _say(progress, f"[tune] study {name!r} in {_safe(url)}" + (f" (stage {k + 1}/{len(spaces)})" if len(spaces) > 1 else ""))
        objective = TrainObjective(cache, stage_space, stage_out, train_fn=train_fn, progress=progress)
        optimize_study(study, objective, stage_space, trials=trials, deadline=deadline, progress=progress)
        stages.append(StageOutcome(stage_space, study, stage_out))
        best = best_trial(study)
        if k < len(spaces) - 1:
            if best is None:
                raise UserError(f"stage {stage_space.stage} has no complete trial, and the next stage fixes its winner; run it again with more --trials or --budget")
            winner = dict(best.params)
            _say(progress, f"[tune] stage {stage_space.stage} winner: {winner}")

    rows = leaderboard_rows(stages, out)
    write_leaderboard(out, rows, [key for s in stages for key in s.space.keys])
    last = stages[-1]
    best_rows = [r for r in rows if r["state"] == "complete" and r.get("stage", last.space.stage) == last.space.stage]
    best_row = best_rows[0] if best_rows else None
    report = _tuning_report(cache, out, stages, rows, best_row, url, progress)
    final_metrics = run_final(cache, last, out, rows, progress=progress, train_fn=train_fn) if final else None
    return TuneResult(out, _safe(url), rows, best_row, report, final_metrics)


def _tuning_report(cache: Cache, out: Path, stages: list[StageOutcome], rows: list[dict[str, Any]], best_row: dict[str, Any] | None, url: str, progress: bool) -> Path | None:
    """``OUT/report.html``: leaderboard, the best trial on validation, and the tuning plots."""
    from tellapart.evaluate import ReportInputs, evaluate_run, write_report

    if best_row is None or not best_row.get("run"):
        _say(progress, "[tune] no complete trial yet: leaderboard written, no report")
        return None
    run = out / best_row["run"]
    if not RunDir(run).best.is_file():
        _say(progress, f"[tune] the best trial's run ({run}) is not in this folder (another machine's worker?): no report here")
        return None
    signature = json.dumps([[s.space.name, [[t.number, t.state.name, str(t.datetime_complete)] for t in s.study.get_trials(deepcopy=False)]] for s in stages])
    signature_path = out / "best" / "trials-reported.json"
    report = RunDir(out).report()
    if report.is_file() and signature_path.is_file() and signature_path.read_text() == signature:
        return report  # no trial has changed since the report was written
    record_path = out / "best" / "metrics-val.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if record is None or record.get("run") != str(run):
        (out / "best").mkdir(exist_ok=True)
        record = evaluate_run(run, split="val", cache=cache.path, leaderboard=report_rows(rows), report_dir=out / "best",
                              title=f"{stages[-1].space.name} · best trial #{best_row['trial']} · validation")
    counts: dict[str, int] = {}
    images = 0
    for s in stages:
        for t in s.study.get_trials(deepcopy=False):
            if "duplicate_of" not in t.user_attrs:
                counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
                images += int(t.user_attrs.get("images_processed") or 0)
    space = stages[-1].space
    fidelity = space.fidelity
    history = read_metrics(run)
    env = RunDir(run).environment
    import yaml

    inputs = ReportInputs(
        title=f"Tuning {space.name} · best trial #{best_row['trial']} on validation",
        metrics=record,
        history=history,
        config=yaml.safe_load(RunDir(run).config.read_text()) if RunDir(run).config.is_file() else {},
        environment=json.loads(env.read_text()) if env.is_file() else {},
        leaderboard=report_rows(rows),
        warnings=[
            "These numbers are on the validation split the trials were selected on, so they are optimistic. "
            "Run the same command with --final to retrain the best configuration on train+val and test it once."
        ],
        notes={
            "split": f"val ({record.get('n')} images; used for selection)",
            "best trial": str(best_row["name"]),
            "study": f"{space.name} in {_safe(url)}",
            "trials": ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
            "search": f"sampler {space.sampler['name']}, pruner {space.pruner['name']}, fidelity {fidelity.kind}"
            + (f" {list(fidelity.fractions)}" if fidelity.kind == "data" else ""),
            "compute": f"{images:,} training images processed over all trials",
        },
        extra_sections=tuning_plots(stages, rows),
    )
    path = write_report(RunDir(out).report(), inputs)
    signature_path.write_text(signature)
    _say(progress, f"[tune] report: {path}")
    return path


def run_final(cache: Cache, stage: StageOutcome, out: Path, rows: list[dict[str, Any]], *, progress: bool = True, train_fn: TrainFn = train) -> dict[str, Any]:
    """Retrains the best trial's configuration on train+val and evaluates it once on test.

    The retraining repeats the best trial's procedure with validation folded into training:
    each rung trains as many epochs as the trial's rung chose on validation (its best epoch),
    on the same fraction (now of train+val), continuing from the previous rung when the trial
    did. With no validation left, early stopping is off. The test split is read once: a second
    ``--final`` prints the first result.
    """
    from tellapart.evaluate import TestLedger, evaluate_run

    final_dir = out / "final"
    tested = TestLedger.first_result(final_dir)
    if tested is not None:
        _say(progress, f"[final] already tested once: {final_dir / 'metrics.json'} (the test split is read only once)")
        return tested
    best = best_trial(stage.study)
    if best is None:
        raise UserError(f"study {stage.space.name} has no complete trial to retrain; run more trials first")
    cfg = config_from_dict(best.user_attrs["config"], f"trial {best.number} config")
    cfg = dataclasses.replace(cfg, early_stopping=dataclasses.replace(cfg.early_stopping, patience=0))
    rungs = best.user_attrs.get("rungs") or []
    if not rungs:
        raise UserError(f"trial {best.number} recorded no runs; cannot retrain it")
    init_from: Path | None = None
    run_dir = final_dir
    for k, rung in enumerate(rungs):
        epochs = int(rung.get("best_epoch") or rung.get("epochs") or cfg.epochs)
        rung_cfg = dataclasses.replace(cfg, train_fraction=float(rung["fraction"]), epochs=max(1, epochs))
        run_dir = level_dir(final_dir, k) if len(rungs) > 1 else final_dir / "run"
        _say(progress, f"[final] trial #{best.number} on train+val" + (f", rung {k + 1}/{len(rungs)}" if len(rungs) > 1 else "") + f": {rung_cfg.epochs} epochs")
        train_level(train_fn, cache, rung_cfg, run_dir, init_from=init_from, progress=progress, train_splits=("train", "val"))
        init_from = RunDir(run_dir).best if stage.space.fidelity.warm_start else None
    metrics = evaluate_run(
        run_dir, split="test", cache=cache.path, leaderboard=report_rows(rows), report_dir=final_dir,
        title=f"{stage.space.name} · trial #{best.number} retrained on train+val · test",
    )
    lo, hi = metrics["accuracy_ci"]
    _say(progress, f"[final] test accuracy {metrics['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={metrics['n']}); report {metrics['report']}")
    return metrics
