"""What a study leaves: ``leaderboard.csv``/``.json``, plots, and ``report.html``.

The tuning report shows the best trial on the validation split (the split the trials were
chosen on, so its accuracy is optimistic); only ``--final`` reads the test split, once.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tellapart._files import write_table
from tellapart.train import read_metrics

from ._rounds import level_metric, promoted_parents, tie_break
from ._space import SearchSpace

__all__ = ["StageOutcome", "leaderboard_rows", "write_leaderboard", "tuning_plots", "report_rows"]


@dataclass(frozen=True)
class StageOutcome:
    """One study of a tuning run (a multi-stage space has one per stage)."""

    space: SearchSpace
    study: optuna.Study
    out: Path  # where its trials/ are


def _value(t: FrozenTrial, metric: str) -> float | None:
    if t.state == TrialState.COMPLETE and t.value is not None:
        return float(t.value)
    last = level_metric(t, metric)
    if last is not None:
        return last
    if t.intermediate_values:
        return float(t.intermediate_values[max(t.intermediate_values)])
    return None


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """``model.args.width`` -> ``width`` unless two keys would read the same."""
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (t if tails.count(t) == 1 else k) for k, t in zip(keys, tails)}


def leaderboard_rows(stages: Sequence[StageOutcome], root: Path) -> list[dict[str, Any]]:
    """Every trial (duplicates, retried attempts and rounds a later round continues left out),
    ranked within its stage.

    Complete trials first by the metric, then pruned ones by the budget they reached and their
    last value; failed and running ones last, unranked. Equal values: lower validation loss first
    (the order :func:`~tellapart.tune._study.best_trial` picks by).
    """
    rows: list[dict[str, Any]] = []
    for stage in stages:
        space = stage.space
        sign = 1.0 if space.direction == "maximize" else -1.0
        short = _short_names(space.keys)
        stage_rows = []
        trials = stage.study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        continued = promoted_parents(trials)
        for t in trials:
            if "duplicate_of" in t.user_attrs or t.state == TrialState.WAITING or (t.state == TrialState.FAIL and t.number in retried) or t.number in continued:
                continue  # a grid point another trial covers; a killed/interrupted trial its retry continues; a promoted round
            rungs = t.user_attrs.get("rungs") or []
            last = rungs[-1] if rungs else {}
            value = _value(t, space.metric)
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
            params = dict(t.params or t.system_attrs.get("fixed_params") or {})
            row: dict[str, Any] = {
                "rank": None,
                **({"stage": space.stage} if len(stages) > 1 else {}),
                "trial": t.number,
                "name": f"#{t.number} " + ", ".join(f"{short.get(k, k)}={v:.4g}" if isinstance(v, float) else f"{short.get(k, k)}={v}" for k, v in params.items()),
                "model": (t.user_attrs.get("config") or {}).get("model", {}).get("name"),
                "state": t.state.name.lower(),
                "params": params,
                **params,
                "fraction": last.get("fraction"),  # the budget reached
                "epochs": sum(r.get("epochs") or 0 for r in rungs) if rungs else None,
                "best_epoch": last.get("best_epoch"),
                "val_acc": last.get("val_acc"),
                "val_loss": last.get("val_loss"),
                "value": value,
                "seconds": round(seconds, 2) if seconds is not None else None,
                "train_seconds": round(sum(r.get("train_seconds") or 0.0 for r in rungs), 3) if rungs else None,
                "images_processed": t.user_attrs.get("images_processed"),
                "run": str((stage.out / last["run"]).relative_to(root)) if last.get("run") else None,
                **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}),
            }
            rank_state = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}.get(t.state, 2)
            # complete trials had the full budget (early stopping may have cut their epochs): by value alone
            budget = (row["fraction"] or 0.0, row["epochs"] or 0) if t.state == TrialState.PRUNED else (0.0, 0)
            score = -sign * value if value is not None and not math.isnan(value) else math.inf
            order = (rank_state, -budget[0], -budget[1], score, tie_break(t), t.number)
            stage_rows.append((order, row))
        stage_rows.sort(key=lambda p: p[0])
        rank = 0
        for order, row in stage_rows:
            if order[0] < 2:
                rank += 1
                row["rank"] = rank
            rows.append(row)
    return rows


_CSV_FIRST = ("rank", "stage", "trial", "state")
_CSV_LAST = ("fraction", "epochs", "best_epoch", "val_acc", "val_loss", "seconds", "train_seconds", "images_processed", "run")


def write_leaderboard(out: Path, rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
    """``leaderboard.json`` (everything) and ``leaderboard.csv`` (one column per searched key)."""
    has_stage = any("stage" in r for r in rows)
    fields = [f for f in _CSV_FIRST if f != "stage" or has_stage] + list(dict.fromkeys(keys)) + list(_CSV_LAST)
    write_table(out, "leaderboard", rows, fields)


def report_rows(rows: Sequence[Mapping[str, Any]], limit: int = 60) -> list[dict[str, Any]]:
    """Leaderboard rows as a report shows them (names carry the values; no paths)."""
    keep = ["rank", "stage", "name", "model", "state", "fraction", "epochs", "best_epoch", "val_acc", "val_loss", "seconds", "images_processed"]
    if len({r.get("model") for r in rows}) == 1:
        keep.remove("model")  # one model family: its name is in the report's config
    return [{k: r.get(k) for k in keep if k in r} for r in rows[:limit]]


# --------------------------------------------------------------------------- plots


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{alt}" style="max-width:100%">'


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _optuna_plot(kind: str, study: optuna.Study) -> bytes | None:
    """One of optuna.visualization.matplotlib's plots as PNG, or None when it cannot be drawn."""
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plot = {"history": ovm.plot_optimization_history, "intermediate": ovm.plot_intermediate_values, "importances": ovm.plot_param_importances}[kind]
    fig = None
    try:
        # rc_context: Optuna's plots switch matplotlib to its ggplot style; keep that to these figures
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore")
            ax = plot(study)
            fig = next(iter(ax.flat if hasattr(ax, "flat") else [ax])).figure
            fig.set_size_inches(8, 4.2)
            return _figure_png(fig)
    except Exception:  # noqa: BLE001 - a missing plot must not lose the study's report
        return None
    finally:
        if fig is not None:
            plt.close(fig)


def _trial_curve(trial: FrozenTrial, stage_out: Path) -> tuple[list[float], list[float], list[float]]:
    """Validation loss of a trial by cumulative epoch and by cumulative training seconds, over its rungs."""
    epochs: list[float] = []
    times: list[float] = []
    losses: list[float] = []
    epoch0 = time0 = 0.0
    for rung in trial.user_attrs.get("rungs") or []:
        rows = read_metrics(stage_out / rung["run"])
        for r in rows:
            if r.get("val_loss") is not None and r.get("epoch") is not None:
                epochs.append(epoch0 + (r["epoch"] or 0.0))
                times.append(time0 + (r.get("wall_time") or 0.0))
                losses.append(r["val_loss"] or 0.0)
        if rows:
            epoch0 += rows[-1].get("epoch") or 0.0
            time0 += rows[-1].get("wall_time") or 0.0
    return epochs, times, losses


def _loss_curves_png(stage: StageOutcome, ranked: Sequence[int], labelled: int = 8) -> bytes | None:
    from matplotlib.figure import Figure

    trials = {t.number: t for t in stage.study.get_trials(deepcopy=False)}
    curves = [(n, _trial_curve(trials[n], stage.out)) for n in ranked if n in trials]
    curves = [(n, c) for n, c in curves if c[0]]
    if not curves:
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    by_epoch, by_time = fig.subplots(1, 2)
    for k, (n, (epochs, times, losses)) in enumerate(reversed(curves)):
        place = len(curves) - 1 - k  # drawn worst first, so the best is on top
        style = {"linewidth": 2.2 if place == 0 else 1.0, "alpha": 1.0 if place < labelled else 0.35}
        if trials[n].state == TrialState.PRUNED:
            style["linestyle"] = "--"
        label = f"#{n}" if place < labelled else None
        by_epoch.plot(epochs, losses, marker="." if len(epochs) < 30 else None, label=label, **style)
        by_time.plot(times, losses, label=None, **style)
    by_epoch.set(xlabel="epoch (over all rungs)", ylabel="validation loss", title="Validation loss by epoch")
    by_time.set(xlabel="training time (s)", ylabel="validation loss", title="Validation loss by wall time")
    handles, labels = by_epoch.get_legend_handles_labels()
    by_epoch.legend(handles[::-1], labels[::-1], fontsize=7, title="trial (best first; dashed: pruned)", title_fontsize=7)
    return _figure_png(fig)


def tuning_plots(stages: Sequence[StageOutcome], rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(title, HTML) sections: optimisation history, pruning, importances, loss curves; per stage."""
    sections = []
    for stage in stages:
        prefix = f"{stage.space.stage}: " if len(stages) > 1 else ""
        finished = [t for t in stage.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        ranked = [r["trial"] for r in rows if r.get("rank") and r.get("stage", stage.space.stage) == stage.space.stage]
        plots = [
            ("Optimisation history", "history", "Each trial's validation metric in the order the trials finished, and the best so far."),
            ("Pruning", "intermediate", "The value each trial reported at each rung or epoch; lines that stop early were pruned."),
        ]
        if len(stage.space.params) >= 2 and len(finished) >= 4:
            plots.append(("Parameter importances", "importances", "How much of the metric's variation each searched key explains (fANOVA)."))
        for title, kind, caption in plots:
            if kind == "intermediate" and stage.space.fidelity.kind == "none":
                continue
            png = _optuna_plot(kind, stage.study)
            if png is not None:
                sections.append((prefix + title, f"<p>{caption}</p>{_img(png, title)}"))
        png = _loss_curves_png(stage, ranked)
        if png is not None:
            sections.append((prefix + "Validation loss per trial", "<p>Validation loss of each trial by epoch and by training time, "
                             "rungs joined end to end; the best trial is drawn thickest.</p>" + _img(png, "validation loss per trial")))
    return sections
