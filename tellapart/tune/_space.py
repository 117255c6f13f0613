"""Search spaces: YAML files that map dotted TrainConfig keys to Optuna distributions.

A space file::

    base: {epochs: 10, model: {name: grid_cnn}}       # TrainConfig keys shared by every trial
    space:                                             # dotted key -> distribution
      model.args.conv_layers: {type: int, low: 1, high: 3}
      model.args.width: {type: categorical, choices: [32, 64, 128]}
      optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    sampler: {name: grid}                              # grid | random | tpe | qmc | cmaes | gp | brute_force
    pruner: {name: successive_halving, reduction_factor: 3}   # | synchronous_halving | hyperband | median | percentile | none
    fidelity: {kind: data, fractions: [0.3, 0.675, 1.0]}      # | {kind: epochs} | {kind: none}
    metric: val_acc                                    # or val_loss (direction follows)
    trials: 50                                         # default trial count (a grid: its size)

or the same keys shared at the top level plus ``stages: [{name, space, base, ...}, ...]``: one
study per stage, run in order, each stage's base holding the previous stage's winning values.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import optuna

from tellapart._errors import UserError
from tellapart.config import bundled_names, deep_merge, load_dataclass, parse_assignments, parse_mapping, resolve_bundled, set_dotted
from tellapart.train import TrainConfig, config_from_dict

__all__ = [
    "Fidelity",
    "Param",
    "SearchSpace",
    "build_pruner",
    "reduction_factor",
    "build_sampler",
    "bundled_spaces",
    "load_spaces",
    "parse_fix",
    "read_space",
]


#: Optuna's samplers by the name a space file uses (grid is built from the space itself).
SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "qmc": optuna.samplers.QMCSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "brute_force": optuna.samplers.BruteForceSampler,
}

#: Rounds of successive halving in which a whole level finishes before any promotion (see
#: ``_rounds``): Optuna prunes nothing in such a study, the rounds do.
SYNCHRONOUS_HALVING = "synchronous_halving"

#: Optuna's pruners by the name a space file uses.
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    SYNCHRONOUS_HALVING: optuna.pruners.NopPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}

#: Pruners whose rungs grow geometrically: data-subset levels report at min_resource * factor**k.
_HALVING_PRUNERS = ("successive_halving", "hyperband")
_DEFAULT_REDUCTION = 3  # the seed's 4.8k -> 10.8k -> 16k keeps about a third at each step


@dataclass(frozen=True)
class Param:
    """One searched config key and its Optuna distribution."""

    key: str  # dotted TrainConfig key, e.g. "optim.lr" or "model.args.width"
    type: Literal["int", "float", "categorical"]
    low: float | None = None  # int/float: smallest value
    high: float | None = None  # int/float: largest value, inclusive
    step: float | None = None  # int/float: spacing of the values (int: 1 when unset)
    log: bool = False  # int/float: sample uniformly in log space
    choices: tuple[Any, ...] = ()  # categorical: the values (None, bool, int, float or str)

    def __post_init__(self) -> None:
        if not self.key:
            raise UserError("space keys are dotted config keys, got an empty one")
        if self.type == "categorical":
            given = [k for k in ("low", "high", "step") if getattr(self, k) is not None] + (["log"] if self.log else [])
            if given:
                raise UserError(f"{self.key}: unknown option(s) {given} for type categorical (it takes choices)")
            if not self.choices:
                raise UserError(f"{self.key}: choices must be a non-empty list")
            if not all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices):
                raise UserError(f"{self.key}: choices must be numbers, strings, booleans or null (Optuna stores them)")
        else:
            if self.choices:
                raise UserError(f"{self.key}: unknown option(s) ['choices'] for type {self.type} (it takes low, high, step, log)")
            if self.low is None or self.high is None:
                raise UserError(f"{self.key}: a {self.type} range needs low and high numbers")
            if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
                raise UserError(f"{self.key}: an int range needs whole-number low and high")
        self.distribution()

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution (raises UserError naming the key when it is invalid)."""
        try:
            if self.type == "int":
                return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
            if self.type == "float":
                return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)  # type: ignore[arg-type]
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{self.key}: {exc}") from None

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """``trial.suggest_*`` for this key."""
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)  # type: ignore[arg-type]
        if self.type == "float":
            return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_categorical(self.key, list(self.choices))

    def grid_values(self) -> list[Any]:
        """Every value, for the grid sampler: categorical choices or an int range."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))  # type: ignore[arg-type]
        raise UserError(
            f"space {self.key}: a grid cannot enumerate a float range; list the values instead "
            f"({{type: categorical, choices: [...]}}) or use another sampler"
        )

    def example(self) -> Any:
        """One valid value (to check a config can be built before any training)."""
        return self.choices[0] if self.type == "categorical" else (int(self.low) if self.type == "int" else float(self.low))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Fidelity:
    """How trials are trained on a growing budget so that poor ones can stop early."""

    kind: Literal["none", "data", "epochs"] = "none"  # data: levels of nested train subsets; epochs: report every epoch
    fractions: tuple[float, ...] = (1.0,)  # data: training-set fraction of each level, increasing
    epochs: tuple[int, ...] = ()  # data: epochs at each level (default: the config's epochs at every level)
    warm_start: bool = True  # data: a promoted trial continues from its previous level's best weights

    @property
    def levels(self) -> int:
        """Training levels a trial can reach: one per data fraction (other fidelities: one)."""
        return len(self.fractions) if self.kind == "data" else 1


@dataclass(frozen=True)
class SearchSpace:
    """One study: the shared config, the searched keys, and Optuna's sampler and pruner."""

    name: str  # study name (stages: "<file>.<stage>")
    base: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig keys shared by every trial
    params: tuple[Param, ...] = ()  # the searched keys
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "tpe"})  # {name, **options}
    pruner: Mapping[str, Any] = field(default_factory=lambda: {"name": "none"})  # {name, **options}
    fidelity: Fidelity = field(default_factory=Fidelity)
    metric: Literal["val_acc", "val_loss"] = "val_acc"  # the validation number the study optimises
    trials: int | None = None  # default number of finished trials (a grid: its size)
    stage: str | None = None  # stage name in a multi-stage file

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.metric == "val_acc" else "minimize"

    @property
    def is_grid(self) -> bool:
        return self.sampler.get("name") == "grid"

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's search space: every value of every key."""
        return {p.key: p.grid_values() for p in self.params}

    def grid_points(self) -> set[tuple[tuple[str, Any], ...]]:
        """Every combination, as sorted ``(key, value)`` tuples (the form :func:`params_key` gives)."""
        grid = self.grid()
        keys = sorted(grid)
        return {tuple(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))}

    def config_dict(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``base`` with the dotted ``values`` set."""
        data = copy.deepcopy(dict(self.base))
        for key, value in values.items():
            set_dotted(data, key, value)
        return data

    def config(self, values: Mapping[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: ``base`` with the dotted ``values`` set."""
        where = f"space {self.name}" + (f" with {dict(values)}" if values else "")
        return config_from_dict(self.config_dict(values), where)

    def fixed(self, values: Mapping[str, Any]) -> SearchSpace:
        """This space with ``values`` fixed in its base (and those keys no longer searched)."""
        return dataclasses.replace(
            self, base=self.config_dict(values), params=tuple(p for p in self.params if p.key not in values)
        )

    def steps(self) -> list[int]:
        """The step each level reports at: a geometric resource for successive halving/Hyperband,
        so every data-subset level is one of the pruner's rungs; else 1, 2, 3..."""
        name = self.pruner.get("name")
        if self.fidelity.kind != "data" or name not in _HALVING_PRUNERS:
            return list(range(1, self.fidelity.levels + 1))
        r = int(self.pruner.get("min_resource", 1))
        eta = int(self.pruner.get("reduction_factor", _DEFAULT_REDUCTION))
        s = int(self.pruner.get("min_early_stopping_rate", 0))
        return [r * eta ** (s + k) for k in range(self.fidelity.levels)]

    def level_plan(self, cfg: TrainConfig) -> list[tuple[float, int]]:
        """``(train_fraction, epochs)`` of each level for a trial's config."""
        if self.fidelity.kind != "data":
            return [(cfg.train_fraction, cfg.epochs)]
        epochs = self.fidelity.epochs or (cfg.epochs,) * self.fidelity.levels
        return list(zip(self.fidelity.fractions, epochs))

    def to_dict(self) -> dict[str, Any]:
        """Plain data identifying the study (stored with it, so a joining worker can check it)."""
        data = dataclasses.asdict(self)
        data.pop("trials")
        return json.loads(json.dumps(data, default=list))


def params_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable identity of one trial's values."""
    return tuple(sorted(params.items()))


def parse_fix(items: Iterable[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (``--fix``; values parsed as YAML) -> ``{key: value}``."""
    return parse_assignments(items, "--fix")


def _spaces_dir() -> Any:
    return resources.files("tellapart.tune") / "spaces"


def bundled_spaces() -> list[str]:
    """Names of the search spaces shipped with tellapart (``tellapart tune --space NAME``)."""
    return bundled_names(_spaces_dir())


def read_space(source: str | Path) -> tuple[str, dict[str, Any]]:
    """``(name, parsed mapping)`` of a space file or a bundled space name, before any checks.

    Raises:
        UserError: not found (listing the bundled names), not YAML, or not a mapping.
    """
    name, text = resolve_bundled(source, _spaces_dir(), "search space")
    return name, parse_mapping(text, str(source), "a search space: a mapping with 'space:' (see tellapart/tune/spaces/)")


@dataclass(frozen=True)
class DistributionFile:
    """The shape of one ``space:`` entry: ``{type: int, low: 1, high: 3}`` and the like."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def param(self, key: str) -> Param:
        return Param(key, self.type, low=self.low, high=self.high, step=self.step, log=self.log, choices=self.choices)


@dataclass(frozen=True)
class FidelityFile:
    """The shape of ``fidelity:``; :meth:`fidelity` checks what one kind allows."""

    kind: Literal["none", "data", "epochs"] = "none"
    fractions: tuple[float, ...] | None = None  # data: increasing training-set fractions in (0, 1]
    epochs: int | tuple[int, ...] | None = None  # data: one per fraction, or one for all
    warm_start: bool | None = None  # data: a promoted trial starts from its previous level's best weights

    def fidelity(self) -> Fidelity:
        given = [k for k in ("fractions", "epochs", "warm_start") if getattr(self, k) is not None]
        if self.kind != "data":
            if given:
                raise UserError(f"fidelity.{given[0]} applies to kind: data only")
            return Fidelity(kind=self.kind)
        fractions = self.fractions or ()
        if not fractions or not all(0 < f <= 1 for f in fractions):
            raise UserError("fidelity.fractions must be a list of training-set fractions in (0, 1]")
        if any(b <= a for a, b in zip(fractions, fractions[1:])):
            raise UserError(f"fidelity.fractions must increase (nested subsets), got {list(fractions)}")
        epochs = (self.epochs,) * len(fractions) if isinstance(self.epochs, int) else tuple(self.epochs or ())
        if (epochs and len(epochs) != len(fractions)) or not all(e >= 1 for e in epochs):
            raise UserError(f"fidelity.epochs must be one positive int per fraction ({len(fractions)})")
        return Fidelity(kind="data", fractions=tuple(fractions), epochs=epochs, warm_start=self.warm_start is not False)


@dataclass(frozen=True)
class StudyFile:
    """The keys of one study in a space file (the top level, or one of its ``stages``); None: not given."""

    base: Mapping[str, Any] | None = None  # TrainConfig keys shared by every trial
    space: Mapping[str, DistributionFile] | None = None  # dotted config key -> distribution
    sampler: str | Mapping[str, Any] | None = None  # a name, or {name, **options}
    pruner: str | Mapping[str, Any] | None = None  # a name, or {name, **options}
    fidelity: FidelityFile | None = None
    metric: Literal["val_acc", "val_loss"] | None = None
    direction: Literal["maximize", "minimize"] | None = None
    trials: int | None = None  # default number of finished trials

    def __post_init__(self) -> None:
        if self.trials is not None and self.trials < 1:
            raise UserError(f"trials must be a positive integer, got {self.trials!r}")


@dataclass(frozen=True)
class StageFile(StudyFile):
    """One entry of ``stages:``: a study of its own, over the file's shared keys."""

    name: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.name:
            raise UserError("every stage needs a 'name'")


@dataclass(frozen=True)
class SpaceFile(StudyFile):
    """The shape of a search-space YAML (see the module docs)."""

    stages: tuple[StageFile, ...] | None = None  # studies run in order, each over the shared keys


def load_spaces(source: str | Path | Mapping[str, Any], *, fix: Mapping[str, Any] | Sequence[str] = (), name: str | None = None) -> list[SearchSpace]:
    """Reads a space file (path or bundled name) into one SearchSpace per stage, validated.

    Args:
        source: a YAML path, a bundled name (see :func:`bundled_spaces`) or the parsed mapping.
        fix: ``{key: value}`` or ``["key=value"]`` set in every stage's base; a fixed key is not searched.
        name: study name (default: the file's name).
    """
    if isinstance(source, Mapping):
        data, default_name = dict(source), "study"
    else:
        default_name, data = read_space(source)
    name = name or default_name
    shape = load_dataclass(SpaceFile, data, where=f"space {name}")
    fixed = parse_fix(fix) if not isinstance(fix, Mapping) else dict(fix)
    if shape.stages is None:
        return [_build(name, None, shape, fixed)]
    if not shape.stages:
        raise UserError(f"space {name}: 'stages' must be a non-empty list of {{name, space, ...}}")
    names = [stage.name for stage in shape.stages]
    if len(set(names)) != len(names):
        raise UserError(f"space {name}: stage names must be unique, got {names}")
    out = []
    for stage in shape.stages:
        merged = _over(shape, stage)
        if merged.space and set(merged.space) <= set(fixed):
            continue  # every key of this stage is fixed (--fix gave its winner): nothing to search
        out.append(_build(f"{name}.{stage.name}", stage.name, merged, fixed))
    if not out:
        raise UserError(f"space {name}: every key of every stage is fixed; nothing to search")
    return out


def _over(shared: StudyFile, stage: StageFile) -> StudyFile:
    """A stage's study: its own keys over the file's, ``base`` merged key by key."""
    given = {f.name: getattr(stage, f.name) for f in dataclasses.fields(StudyFile) if getattr(stage, f.name) is not None}
    given["base"] = deep_merge(shared.base or {}, stage.base or {})
    return dataclasses.replace(StudyFile(**{f.name: getattr(shared, f.name) for f in dataclasses.fields(StudyFile)}), **given)


def _build(name: str, stage: str | None, study: StudyFile, fixed: Mapping[str, Any]) -> SearchSpace:
    where = f"space {name}"
    try:
        params = tuple(spec.param(key) for key, spec in (study.space or {}).items() if key not in fixed)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    metric = study.metric or ("val_loss" if study.direction == "minimize" else "val_acc")
    if study.direction and study.direction != ("maximize" if metric == "val_acc" else "minimize"):
        raise UserError(f"{where}: {metric} cannot be {study.direction}d (val_acc: maximize, val_loss: minimize)")
    try:
        fidelity = (study.fidelity or FidelityFile()).fidelity()
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    space = SearchSpace(
        name=name,
        base=dict(study.base or {}),
        params=params,
        sampler=_named(where, "sampler", study.sampler or {"name": "grid" if params and _all_discrete(params) else "tpe"}),
        pruner=_named(where, "pruner", study.pruner or {"name": "none"}),
        fidelity=fidelity,
        metric=metric,
        trials=study.trials,
        stage=stage,
    )
    if fixed:
        space = space.fixed(fixed)
    _validate(space)
    return space


def _all_discrete(params: Sequence[Param]) -> bool:
    return all(p.type != "float" for p in params)


def _named(where: str, what: str, spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """A sampler or pruner as ``{name, **options}`` (a bare name is ``{name: NAME}``)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec.get("name"), str):
        raise UserError(f"{where}: {what} must be a mapping with a 'name', e.g. {{name: tpe}}")
    return dict(spec)


def _validate(space: SearchSpace) -> None:
    """Fails before any training: unknown config keys, bad sampler/pruner options, a float grid."""
    from tellapart.models import list_models, model_kwargs

    where = f"space {space.name}"
    cfg = space.config({p.key: p.example() for p in space.params})
    names = {cfg.model.name}
    for p in space.params:
        if p.key == "model.name":
            names = set(p.grid_values() if p.type == "categorical" else [])
    for model in names:
        if model not in list_models():
            raise UserError(f"{where}: unknown model {model!r}; see 'tellapart models'")
    if len(names) == 1:
        options = model_kwargs(next(iter(names)))
        args = set(cfg.model.args) | {p.key.split(".", 2)[2] for p in space.params if p.key.startswith("model.args.") and p.key.count(".") >= 2}
        bad = sorted(a for a in args if a not in options)
        if bad:
            raise UserError(f"{where}: model {cfg.model.name} has no option(s) {bad}; it takes {sorted(options)}")
    if space.fidelity.kind == "data" and cfg.train_fraction != 1.0:
        raise UserError(f"{where}: fidelity kind data sets train_fraction per level; remove train_fraction from base")
    if space.fidelity.kind == "none" and space.pruner.get("name") != "none":
        raise UserError(f"{where}: pruner {space.pruner['name']} needs a fidelity (kind: data or epochs) to report to it")
    if space.pruner.get("name") in _HALVING_PRUNERS and space.fidelity.kind == "data":
        for key in ("min_resource", "reduction_factor", "min_early_stopping_rate"):
            value = space.pruner.get(key)
            if value is not None and (not isinstance(value, int) or value < (0 if key == "min_early_stopping_rate" else 1)):
                raise UserError(f"{where}: pruner.{key} must be a positive integer with data fidelity (levels are steps), got {value!r}")
    if space.pruner.get("name") == SYNCHRONOUS_HALVING:
        if space.fidelity.kind != "data" or space.fidelity.levels < 2:
            raise UserError(f"{where}: pruner {SYNCHRONOUS_HALVING} promotes between data levels; add fidelity: {{kind: data, fractions: [0.111, 0.333, 1.0]}}")
        unknown = sorted(set(space.pruner) - {"name", "reduction_factor"})
        if unknown:
            raise UserError(f"{where}: pruner {SYNCHRONOUS_HALVING} takes only reduction_factor, not {unknown}")
        factor = space.pruner.get("reduction_factor", _DEFAULT_REDUCTION)
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
            raise UserError(f"{where}: pruner.reduction_factor must be an integer >= 2 (the share promoted is 1/factor), got {factor!r}")
    if not space.params:
        raise UserError(f"{where}: nothing to search: 'space' is empty (or every key is fixed)")
    build_sampler(space)
    build_pruner(space)


def build_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """Optuna's sampler named by the space (``grid`` enumerates the space's values)."""
    options = dict(space.sampler)
    name = options.pop("name")
    try:
        if name == "grid":
            return optuna.samplers.GridSampler(space.grid(), **options)
        if name not in SAMPLERS:
            raise UserError(f"space {space.name}: unknown sampler {name!r}; choose grid or one of {sorted(SAMPLERS)}")
        return SAMPLERS[name](**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"space {space.name}: sampler {name}: {exc}") from None


def reduction_factor(space: SearchSpace) -> int:
    """The halving pruner's reduction factor: 1 of every ``factor`` trials goes on at a rung."""
    return int(space.pruner.get("reduction_factor", _DEFAULT_REDUCTION))


def build_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """Optuna's pruner named by the space, its rungs aligned with the fidelity's."""
    options = dict(space.pruner)
    name = options.pop("name")
    if name not in PRUNERS:
        raise UserError(f"space {space.name}: unknown pruner {name!r}; choose one of {sorted(PRUNERS)}")
    if name == SYNCHRONOUS_HALVING:
        return optuna.pruners.NopPruner()
    if name in _HALVING_PRUNERS:
        options.setdefault("reduction_factor", _DEFAULT_REDUCTION)
        if space.fidelity.kind == "data":
            options.setdefault("min_resource", 1)
            if name == "hyperband":
                options.setdefault("max_resource", space.steps()[-1])
    try:
        return PRUNERS[name](**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"space {space.name}: pruner {name}: {exc}") from None
