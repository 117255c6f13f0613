"""``run_recipe``: prepare once, run a recipe's steps, test the model best on validation once.

Recipe folder::

    recipe.yaml      the resolved recipe (quick overrides applied) and what it ran on
    cache/           the prepared cache
    <step>/          each step's ladder folder, study folder or run folder (re-running resumes)
    leaderboard.csv/.json   every candidate of every step, ranked by validation accuracy
    metrics.json, report.html   the best candidate tested once, the seed's figures beside it
    summary.json     what run_recipe returns
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tellapart._log import say as _say
from tellapart._errors import UserError
from tellapart.data import Cache, Source, open_source, prepare
from tellapart.config import deep_merge
from tellapart.train import apply_overrides, config_from_dict, config_to_dict, run_ladder, run_seeds, rung_run
from tellapart._files import atomic_write, rank_by_validation, write_table
from tellapart.runs import RunDir

from ._recipe import LadderStep, Recipe, TrainStep, TuneStep, flatten_keys, load_recipe
from ._standins import STANDINS, read_marker
from ._subset import SubsetSource

if TYPE_CHECKING:
    from tellapart.tune import SearchSpace

__all__ = ["Candidate", "run_recipe", "write_standin"]


@dataclass(frozen=True)
class Candidate:
    """A model a step produced, as the recipe's leaderboard lists it."""

    name: str  # rung or step name
    step: str  # the step that trained it
    run: Path  # its run folder
    summary: Mapping[str, Any]  # the run's summary.json (val_acc, val_loss, params, ...)

    def row(self) -> dict[str, Any]:
        s = self.summary
        return {
            "rung": self.name, "step": self.step, "model": s.get("model"), "params": s.get("params"),
            "val_acc": s.get("val_acc"), "val_acc_std": s.get("val_acc_std"), "val_loss": s.get("val_loss"),
            "best_epoch": s.get("best_epoch"), "epochs": s.get("epochs"), "train_seconds": s.get("train_seconds"),
            "images_per_s": s.get("images_per_s"), "run": str(self.run),
        }


@dataclass(frozen=True)
class _Context:
    cache: Cache
    out: Path  # the step's folder
    base: Mapping[str, Any]  # the recipe's base
    overrides: Sequence[str]  # --set key=value, for every training config
    progress: bool


# --------------------------------------------------------------------------- steps


def _ladder_configs(step: LadderStep, base: Mapping[str, Any], overrides: Sequence[str]) -> list[dict[str, Any]]:
    merged = deep_merge(dict(base), step.base)
    return [apply_overrides(deep_merge(merged, r.config), overrides) for r in step.rungs]


def _run_ladder(step: LadderStep, ctx: _Context) -> list[Candidate]:
    rows = run_ladder(ctx.cache, ctx.out, rungs=step.rungs, base=deep_merge(dict(ctx.base), step.base), overrides=ctx.overrides, progress=ctx.progress)
    return [Candidate(str(r["rung"]), step.name, rung_run(ctx.out, r), r) for r in rows]


def _tune_fix(step: TuneStep, base: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    from tellapart.tune import parse_fix

    return {**flatten_keys(base), **dict(step.fix), **parse_fix(overrides)}


def _tune_spaces(step: TuneStep, base: Mapping[str, Any], overrides: Sequence[str]) -> list[SearchSpace]:
    """The step's search space, one per stage, with its fixed keys and fidelity."""
    from tellapart.tune import load_spaces, read_space

    fix = _tune_fix(step, base, overrides)
    if step.fidelity is None:
        return load_spaces(step.space, fix=fix)
    name, data = read_space(step.space)
    return load_spaces({**data, "fidelity": dict(step.fidelity)}, fix=fix, name=name)


def _run_tune(step: TuneStep, ctx: _Context) -> list[Candidate]:
    from tellapart.tune import run_study

    spaces = _tune_spaces(step, ctx.base, ctx.overrides)
    result = run_study(ctx.cache, spaces, ctx.out, trials=step.trials, budget=step.budget, progress=ctx.progress)
    if result.best is None or not result.best.get("run"):
        raise UserError(f"step {step.name}: the study has no complete trial; run the recipe again (it resumes) or give it more trials")
    run = ctx.out / str(result.best["run"])
    summary = RunDir(run).read_summary() or {}
    return [Candidate(step.name, step.name, run, {**summary, "val_acc": result.best.get("val_acc", summary.get("val_acc"))})]


def _train_config(step: TrainStep, base: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    return apply_overrides(deep_merge(dict(base), step.config), overrides)


def _run_train(step: TrainStep, ctx: _Context) -> list[Candidate]:
    cfg = config_to_dict(config_from_dict(_train_config(step, ctx.base, ctx.overrides), f"step {step.name}"))
    row = run_seeds(ctx.cache, cfg, ctx.out, seeds=1, progress=ctx.progress)
    return [Candidate(step.name, step.name, ctx.out, row)]


#: How each kind of step runs: its library call, and the candidates it leaves.
_RUNNERS = {"ladder": _run_ladder, "tune": _run_tune, "train": _run_train}


def _validate(recipe: Recipe, overrides: Sequence[str]) -> None:
    """Every step's configs and model names, before anything is prepared or trained."""
    from tellapart.models import model_kwargs

    for step in recipe.steps:
        where = f"recipe {recipe.name}: step {step.name}"
        if isinstance(step, TuneStep):
            try:
                _tune_spaces(step, recipe.base, overrides)
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None
            continue
        configs = _ladder_configs(step, recipe.base, overrides) if isinstance(step, LadderStep) else [_train_config(step, recipe.base, overrides)]
        for cfg_dict in configs:
            cfg = config_from_dict(cfg_dict, where)
            try:
                model_kwargs(cfg.model.name)
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- the whole recipe


def _open(recipe: Recipe, data: Path, class_map: str | Path | None) -> Source:
    """The data as the recipe's source spec says; a relative class map is looked up in the data folder."""
    spec = recipe.source
    mapping: str | Path | None = class_map
    if mapping is None and spec.class_map:
        candidate = Path(spec.class_map) if Path(spec.class_map).is_absolute() else data / spec.class_map
        mapping = candidate if candidate.is_file() else None  # optional: without it, folder ids are the class names
    source = open_source(data, kind=spec.kind, class_map=mapping, pair_dirs=spec.pair_dirs)
    limit = recipe.prepare.limit
    return SubsetSource(source, limit, recipe.prepare.seed) if limit else source


def _data_label(data: Path, n_images: int) -> str:
    marker = read_marker(data) if data.is_dir() else None
    what = str(marker.get("label")) if marker and marker.get("label") else f"{data.resolve()}"
    return f"{what} ({n_images:,} images in the cache)"


def _claim(out: Path, recipe: Recipe, data: Path, overrides: Sequence[str]) -> None:
    """Writes ``recipe.yaml``, refusing a folder that holds a run of another recipe or other settings."""
    identity = {"recipe": recipe.name, "quick": recipe.quick, "data": str(data.resolve()), "overrides": list(overrides), "resolved": dict(recipe.raw)}
    path = out / "recipe.yaml"
    text = yaml.safe_dump(identity, sort_keys=False)
    if path.is_file():
        if yaml.safe_load(path.read_text()) != yaml.safe_load(text):
            raise UserError(f"{out} holds a run of another recipe, data or settings (see {path}); choose a new --out")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and holds no recipe run; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


_FIELDS = ("rank", "rung", "step", "model", "params", "val_acc", "val_loss", "best_epoch", "epochs", "train_seconds", "images_per_s", "run")


def _leaderboard(out: Path, candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
    """Every candidate ranked by validation accuracy (ties: lower validation loss, then recipe order)."""
    rows = rank_by_validation([c.row() for c in candidates])
    write_table(out, "leaderboard", rows, _FIELDS)
    return rows


def _notes(recipe: Recipe, data_label: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    notes = {"recipe": f"{recipe.name}{' --quick (scaled down for CI; not the protocol)' if recipe.quick else ''}: {recipe.description}"}
    if recipe.published:
        for what, figure in recipe.published.figures.items():
            notes[f"seed published · {what}"] = f"{figure} on {recipe.published.data}"
    notes["this run's data"] = data_label
    if recipe.baseline:
        base = next(r for r in rows if r["rung"] == recipe.baseline)
        best = rows[0]
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        notes["validation, best vs baseline"] = f"{best['rung']} {fmt(best['val_acc'])} vs {recipe.baseline} {fmt(base['val_acc'])}"
    return notes


def run_recipe(
    name_or_path: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    quick: bool = False,
    overrides: Sequence[str] = (),
    class_map: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Runs a recipe end to end on ``data``; re-running the same command resumes.

    Prepares the cache, runs every step in order (ladders, studies, single runs), ranks every
    model they produced by validation accuracy, and evaluates the best once on the test split,
    with the seed's published figures in the report beside the measured one.

    Args:
        name_or_path: a bundled recipe (see :func:`list_recipes`) or a recipe YAML file.
        data: the dataset, in the layout the recipe's ``source`` names (or its stand-in).
        out: the recipe folder (see the module docs).
        quick: apply the recipe's ``quick`` overrides (small images, few epochs and trials: CI).
        overrides: ``key=value`` TrainConfig settings for every training run (e.g. ``device=cpu``).
        class_map: a folder-id -> class-name file (default: the recipe's, when the data has it).

    Returns:
        ``summary.json``'s content: the test metrics of the chosen model (``test``), its
        leaderboard row (``best``), the baseline's row, every candidate, and the report's path.
    """
    recipe = load_recipe(name_or_path, quick=quick)
    data, out = Path(data), Path(out)
    if not data.exists():
        raise UserError(f"dataset not found: {data}" + (f"; make the stand-in with 'tellapart recipe standin {recipe.name} --out {data}'" if recipe.standin else ""))
    _validate(recipe, overrides)
    source = _open(recipe, data, class_map)
    _claim(out, recipe, data, overrides)
    _say(progress, f"[recipe {recipe.name}] preparing the cache")
    cache = prepare(source, out / "cache", recipe.prepare.config(), progress=progress)
    candidates: list[Candidate] = []
    for k, step in enumerate(recipe.steps, 1):
        _say(progress, f"[recipe {recipe.name}] step {k}/{len(recipe.steps)}: {step.kind} {step.name}")
        candidates += _RUNNERS[step.kind](step, _Context(cache, out / step.name, recipe.base, overrides, progress))
    rows = _leaderboard(out, candidates)
    best = rows[0]
    data_label = _data_label(data, len(cache))
    metrics = _evaluate_once(recipe, out, cache, best, rows, data_label, progress)
    baseline = next((r for r in rows if r["rung"] == recipe.baseline), None)
    summary = {
        "recipe": recipe.name,
        "quick": recipe.quick,
        "data": str(data),
        "data_label": data_label,
        "published": {"data": recipe.published.data, "figures": dict(recipe.published.figures)} if recipe.published else None,
        "test": {k: metrics[k] for k in ("accuracy", "accuracy_ci", "n", "errors", "loss") if k in metrics},
        "best": best,
        "baseline": baseline,
        "candidates": rows,
        "report": metrics["report"],
    }
    atomic_write(RunDir(out).summary, json.dumps(summary, indent=2))  # a recipe folder's summary: what run_recipe returned
    return summary


def _evaluate_once(recipe: Recipe, out: Path, cache: Cache, best: Mapping[str, Any], rows: list[dict[str, Any]], data_label: str, progress: bool) -> dict[str, Any]:
    """The best candidate on test; a re-run that chose the same model reuses the one reading."""
    from tellapart.evaluate import TestLedger, evaluate_run

    tested = TestLedger.first_result(out, run=best["run"])
    if tested is not None and Path(tested["report"]).is_file():
        _say(progress, f"[recipe {recipe.name}] {best['rung']} was tested already: {out / 'metrics.json'} (the test split is read once)")
        return tested
    _say(progress, f"[recipe {recipe.name}] best on validation: {best['rung']}; testing it once")
    return evaluate_run(
        best["run"], split="test", cache=cache.path, leaderboard=rows, report_dir=out,
        title=f"{recipe.name}{' (quick)' if recipe.quick else ''} · best on validation: {best['rung']} · test",
        notes=_notes(recipe, data_label, rows),
    )


# --------------------------------------------------------------------------- stand-ins


def write_standin(name_or_path: str | Path, out: str | Path, *, quick: bool = False, fashion_mnist: str | Path | None = None, progress: bool = True) -> Path:
    """Writes the data a recipe runs on here (its ``standin``), at the quick size if asked.

    Returns:
        ``out``, ready for ``run_recipe(name, out, ...)``; an ``out`` already holding the same
        stand-in is reused.
    """
    recipe = load_recipe(name_or_path, quick=quick)
    if recipe.standin is None:
        raise UserError(f"recipe {recipe.name} names no stand-in data")
    maker = STANDINS.get(recipe.standin.kind)
    if maker is None:
        raise UserError(f"recipe {recipe.name}: unknown stand-in {recipe.standin.kind!r}; choose one of {sorted(STANDINS)}")
    options = dict(recipe.standin.args)
    if fashion_mnist is not None and recipe.standin.kind.startswith("fashion_"):
        options["fashion_mnist"] = fashion_mnist
    try:
        inspect.signature(maker).bind(out, **options, progress=progress)
    except TypeError as exc:
        raise UserError(f"recipe {recipe.name}: standin.args: {exc}") from None
    return maker(out, **options, progress=progress)
