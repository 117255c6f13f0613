"""The model ladder: several configs trained on the same split and seed, one leaderboard.

Selection is on validation only; the test split is left for ``evaluate``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tellapart._errors import UserError
from tellapart._files import atomic_write, rank_by_validation, write_table
from tellapart.config import deep_merge, load_dataclass, load_mapping, yaml_load
from tellapart.data import Cache
from tellapart.models import model_kwargs
from tellapart.runs import RunDir

from ._config import TrainConfig, apply_overrides, config_from_dict, config_to_dict
from ._baselines import BASELINES, BaselineResult, baseline_row, fit_baseline
from ._fit import train
from ._spread import seed_spread

__all__ = ["LadderFile", "Rung", "DEFAULT_LADDER", "first_network", "load_ladder", "run_ladder", "run_seeds", "rung_run"]


@dataclass(frozen=True)
class Rung:
    """One entry of the ladder: a named config trained into its own folder."""

    name: str  # short name on the leaderboard and the rung's folder
    config: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig keys over the ladder's base

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise UserError(f"rung name {self.name!r} must be a non-empty folder name")


@dataclass(frozen=True)
class LadderFile:
    """The shape of a ladder YAML (``tellapart ladder --ladder FILE``)."""

    rungs: tuple[Rung, ...]  # trained in order, each over ``base``
    base: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig keys shared by every rung

    def __post_init__(self) -> None:
        if not self.rungs:
            raise UserError("a ladder needs at least one rung in 'rungs: [{name, config}]'")


#: The seeds' ladder: linear baseline (SGD) -> MLP 200/60 -> MLP + dropout -> S0 CNN -> regularised CNN
#: (ReLU, BatchNorm, dropout, small shifts). ``run_ladder(baselines=...)`` adds classical baselines.
DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("linear", {"model": {"name": "linear"}, "optim": {"name": "sgd", "lr": 0.01}}),
    Rung("mlp", {"model": {"name": "mlp", "args": {"hidden": [200, 60]}}}),
    Rung("mlp_dropout", {"model": {"name": "mlp", "args": {"hidden": [200, 60], "dropout": 0.25}}}),
    Rung("s0_cnn", {"model": {"name": "s0_faces_cnn"}}),
    Rung(
        "cnn_regularised",
        {
            "model": {
                "name": "cnn",
                "args": {
                    "blocks": [
                        # 16-32-64: at 32-64-128 it trained 4.6x slower than the s0_cnn rung on the CPU (28-px
                        # Fashion-MNIST ladder, 2,622 vs 12,018 img/s); at these widths 2.7x (2,940 vs 8,016)
                        {"filters": 16, "batch_norm": True, "pool": "max"},
                        {"filters": 32, "batch_norm": True, "pool": "max", "dropout": 0.1},
                        {"filters": 64, "batch_norm": True, "pool": "max", "dropout": 0.2},
                    ],
                    "activation": "relu",  # Mish trained 4-6x slower on the CPU for no measured gain
                    "global_pool": True,
                    "dense": [64],
                    "dense_dropout": 0.3,
                },
            },
            "optim": {"name": "adamw", "weight_decay": 5e-4},
            # shifts only: a mirrored digit, letter or scan is another image (fit searches flips on validation)
            "augment": {"translate": 0.05},
        },
    ),
)


def load_ladder(path: str | Path) -> tuple[dict[str, Any], list[Rung]]:
    """Reads a ladder YAML: ``base:`` (config shared by all rungs) and ``rungs: [{name, config}]``.

    Raises:
        UserError: a missing file, bad YAML, or unknown keys and wrong types, naming the file and key.
    """
    data = load_mapping(path, "'rungs:' with a list of {name, config} (and optionally 'base:')", what="ladder file")
    ladder = load_dataclass(LadderFile, data, where=str(path))
    return dict(ladder.base), list(ladder.rungs)


def run_seeds(cache: Cache, config: Mapping[str, Any], out: Path, *, seeds: int, progress: bool) -> dict[str, Any]:
    """Trains ``config`` with ``seeds`` seeds (resuming unfinished ones); returns the mean row.

    With one seed the run folder is ``out``; with several, ``out/seed-K``.
    """
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}")
    rows = []
    base_seed = int(config.get("seed", 0))
    for k in range(seeds):
        run_dir = out if seeds == 1 else out / f"seed-{k}"
        cfg = config_from_dict({**config, "seed": base_seed + k}, str(out))
        _require_same_config(run_dir, cfg)
        # RunDir's rule: a finished run is read back, a started one resumes (or restarts), a new one trains
        rows.append(train(cache, cfg, run_dir, resume=None, progress=progress).summary)
    return _aggregate(rows, out, seeds)


def _require_same_config(run_dir: Path, cfg: TrainConfig) -> None:
    """A run folder is reused only for the config it was started with, never silently for another."""
    path = RunDir(run_dir).config
    if not path.is_file():
        return
    started = {k: v for k, v in (yaml_load(path.read_text()) or {}).items() if k != "cache"}
    if config_from_dict(started, str(path)) != cfg:
        raise UserError(f"{run_dir} was started with another config; choose a new --out, or delete {run_dir} to retrain it")


def rung_run(ladder: str | Path, row: Mapping[str, Any]) -> Path:
    """The run folder of a leaderboard row, found inside ``ladder`` (its first seed's with several).

    The row's ``run`` path is as typed when the ladder ran (relative to that working directory);
    this one holds wherever the ladder folder is read from.
    """
    folder = Path(ladder) / str(row["rung"])
    return folder / "seed-0" if int(row.get("seeds") or 1) > 1 else folder


def _aggregate(rows: Sequence[dict[str, Any]], out: Path, seeds: int) -> dict[str, Any]:
    accs = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    first = rows[0]
    spread = seed_spread(accs) if accs else None
    return {
        "model": first["model"],
        "params": first["params"],
        "val_acc": round(statistics.fmean(accs), 6) if accs else None,
        "val_acc_std": round(statistics.stdev(accs), 6) if len(accs) > 1 else None,
        "val_acc_ci": list(spread.ci) if spread and spread.ci else None,  # 95% t-interval of the mean over seeds
        "val_loss": round(statistics.fmean(losses), 6) if losses else None,
        "best_epoch": first["best_epoch"],
        "epochs": first["epochs"],
        "train_seconds": round(sum(r["train_seconds"] for r in rows) / len(rows), 2),
        "images_per_s": round(statistics.fmean(r["images_per_s"] for r in rows), 1),
        "images_processed": sum(r.get("images_processed", 0) for r in rows),
        "seeds": seeds,
        "run": str(out if seeds == 1 else out / "seed-0"),
    }


_FIELDS = ("rank", "rung", "kind", "model", "params", "val_acc", "val_acc_std", "val_acc_ci", "val_loss", "best_epoch", "epochs",
           "train_seconds", "images_per_s", "seeds", "run", "note")  # fmt: skip


def run_ladder(
    cache: Cache | str | Path,
    out: str | Path,
    *,
    rungs: Sequence[Rung] = DEFAULT_LADDER,
    base: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    seeds: int = 1,
    baselines: Sequence[str] = (),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Trains every rung on the same cache split and seed; writes ``leaderboard.csv``/``.json``.

    Re-running the same command resumes: finished rungs are read back, unfinished ones resume.
    Rows are ranked by validation accuracy. ``baselines`` (names from ``BASELINES``) are
    classical models fitted on the same split first, rows ``baseline:NAME`` with no run folder.
    """
    cache = cache if isinstance(cache, Cache) else Cache(cache)
    out = Path(out)
    if not rungs:
        raise UserError("the ladder has no rungs")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}")
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        raise UserError(f"rung names must be unique, got {names}")
    configs = {}
    for rung in rungs:  # validate every rung before training any
        merged = apply_overrides(deep_merge(dict(base or {}), rung.config), overrides)
        cfg = config_from_dict(merged, f"rung {rung.name!r}")
        try:
            model_kwargs(cfg.model.name)  # a misspelt model name fails now, not after the rungs before it
        except UserError as exc:
            raise UserError(f"rung {rung.name!r}: {exc}") from None
        configs[rung.name] = config_to_dict(cfg)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise UserError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    out.mkdir(parents=True, exist_ok=True)
    rows = [_baseline(cache, out, name, progress) for name in baselines]
    for k, rung in enumerate(rungs, 1):
        if progress:
            print(f"[ladder {k}/{len(rungs)}] {rung.name}", flush=True)
        row = run_seeds(cache, configs[rung.name], out / rung.name, seeds=seeds, progress=progress)
        rows.append({"rung": rung.name, **row})
        _write_leaderboard(out, rows)
    return _write_leaderboard(out, rows)


def _baseline(cache: Cache, out: Path, name: str, progress: bool) -> dict[str, Any]:
    """A baseline's row: read back from ``OUT/baselines/NAME.json``, or fitted (seconds) and saved there."""
    path = out / "baselines" / f"{name}.json"
    if path.is_file():
        result = BaselineResult(**json.loads(path.read_text()))
    else:
        if progress:
            print(f"[ladder] baseline {name}: {BASELINES[name]}", flush=True)
        result = fit_baseline(cache, name).result
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, json.dumps(result.to_json(), indent=2))
    return baseline_row(result)


def first_network(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The best-ranked row that has a run folder (classical baselines have none)."""
    for row in rows:
        if row.get("kind") != "classical":
            return row
    raise UserError("the leaderboard holds no trained network yet; finish the ladder first")


def _write_leaderboard(out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ranked = rank_by_validation(rows)
    write_table(out, "leaderboard", ranked, _FIELDS)
    return ranked
