"""``resolve_run``: any folder that trained or chose a model -> the run folder that holds it.

Every command that needs "a model" (predict, export, serve) accepts, in this order of checks:

    RUN/checkpoints/best.pt     a run folder ('tellapart train')
    FILE.pt                     a checkpoint file
    DIR/chosen.json             a folder that chose a run: {"run": "<path relative to DIR>", ...}
    DIR/recipe.yaml             a recipe folder: the candidate best on validation (the one it tested)
    DIR/leaderboard.json        a ladder (rows with "rung": the first whose run has a best.pt) or a
                                tuning study (rows with "trial" and "run" relative to DIR: its --final
                                retrain when there is one, else the first complete trial's run)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tellapart._errors import UserError
from tellapart.runs import RunDir

__all__ = ["resolve_run"]

def resolve_run(path: str | Path) -> tuple[Path, str]:
    """The run folder (or checkpoint file) that ``path`` stands for, and a one-line note of how.

    Raises:
        UserError: when ``path`` is none of the kinds in the module docs, or names a run that is gone.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist; pass a run folder, a checkpoint file, or a ladder, study, recipe or chosen folder")
    if p.is_file():
        return p, f"{p}: checkpoint file"
    if RunDir(p).best.is_file():
        return p, f"{p}: run folder"
    if (p / "chosen.json").is_file():
        return _from_chosen(p)
    if (p / "recipe.yaml").is_file() and (p / "leaderboard.json").is_file():
        return _from_recipe(p)
    if (p / "leaderboard.json").is_file():
        rows = _leaderboard(p)
        if rows and all("trial" in r for r in rows):
            return _from_study(p, rows)
        return _from_ladder(p, rows)
    raise UserError(
        f"{p} holds no best checkpoint (checkpoints/best.pt), chosen.json or leaderboard.json; pass a run folder "
        "written by 'tellapart train', or a ladder, study, recipe or chosen folder"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not readable JSON: {exc}") from None


def _leaderboard(folder: Path) -> list[Mapping[str, Any]]:
    rows = _read_json(folder / "leaderboard.json")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{folder / 'leaderboard.json'} is not a list of rows; was it written by tellapart?")
    return rows


def _has_model(run: Path) -> bool:
    return RunDir(run).best.is_file()


def _from_chosen(folder: Path) -> tuple[Path, str]:
    chosen = _read_json(folder / "chosen.json")
    if not isinstance(chosen, dict) or not isinstance(chosen.get("run"), str):
        raise UserError(f"{folder / 'chosen.json'} names no run (expected {{\"run\": \"<path relative to {folder}>\"}})")
    run = folder / chosen["run"]
    if not _has_model(run):
        raise UserError(f"{folder / 'chosen.json'} chose {run}, which holds no checkpoints/best.pt")
    return run, f"{folder}: chosen.json -> {run}"


def _from_ladder(folder: Path, rows: list[Mapping[str, Any]]) -> tuple[Path, str]:
    from tellapart.train import rung_run

    for row in rows:
        if "rung" not in row:
            continue
        run = rung_run(folder, row)
        if _has_model(run):
            return run, f"{folder}: ladder, rank {row.get('rank', '?')} rung {row['rung']} -> {run}"
    raise UserError(f"{folder} is a ladder folder whose leaderboard names no finished run; finish the ladder first")


def _from_study(folder: Path, rows: list[Mapping[str, Any]]) -> tuple[Path, str]:
    final = folder / "final"
    if RunDir(final).evaluation().is_file():
        # the --final retrain (the best configuration on train+val, tested once); its last level is the model
        # (level-<k>; rung-<k> in studies from before levels were so named)
        rungs = sorted([*final.glob("level-*"), *final.glob("rung-*")], key=lambda d: int(d.name.split("-")[1]) if d.name.split("-")[1].isdigit() else -1)
        for run in [final / "run", *reversed(rungs)]:
            if _has_model(run):
                return run, f"{folder}: tuning study, the --final retrain -> {run}"
    run = _best_trial_run(folder, rows)
    if run is None:
        raise UserError(f"{folder} is a tuning study with no complete trial's run in it; run more trials first")
    return run, f"{folder}: tuning study, best complete trial -> {run}"


def _from_recipe(folder: Path) -> tuple[Path, str]:
    rows = _leaderboard(folder)
    if not rows:
        raise UserError(f"{folder / 'leaderboard.json'} lists no candidates; finish the recipe first")
    best = rows[0]  # ranked by validation: the candidate the recipe tested once
    step_dir = folder / str(best.get("step", ""))
    run = _step_candidate(step_dir, str(best.get("rung"))) if best.get("step") and step_dir.is_dir() else None
    if run is not None:
        return run, f"{folder}: recipe, best on validation {best.get('rung')} (step {best.get('step')}) -> {run}"
    recorded = Path(str(best.get("run", "")))
    if best.get("run") and _has_model(recorded):
        return recorded, f"{folder}: recipe, best on validation {best.get('rung')} -> {recorded}"
    raise UserError(f"{folder} is a recipe folder whose best candidate ({best.get('rung')}) is not in it; run the recipe again (it resumes)")


def _step_candidate(step_dir: Path, rung: str) -> Path | None:
    """The run a recipe step handed on as candidate ``rung``: the step's run, ladder rung or best trial."""
    if _has_model(step_dir):  # a train step: its folder is the run
        return step_dir
    if not (step_dir / "leaderboard.json").is_file():
        return None
    rows = _leaderboard(step_dir)
    run = _best_trial_run(step_dir, rows) if rows and all("trial" in r for r in rows) else _ladder_rung(step_dir, rows, rung)
    return run if run is not None and _has_model(run) else None


def _best_trial_run(study: Path, rows: list[Mapping[str, Any]]) -> Path | None:
    """The first complete trial's run: what a recipe's tune step hands on (not a --final retrain)."""
    for row in rows:
        if row.get("state") == "complete" and row.get("run") and _has_model(study / str(row["run"])):
            return study / str(row["run"])
    return None


def _ladder_rung(ladder: Path, rows: list[Mapping[str, Any]], rung: str) -> Path | None:
    from tellapart.train import rung_run

    for row in rows:
        if str(row.get("rung")) == rung:
            return rung_run(ladder, row)
    return None
