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
import yaml

from tellapart._errors import UserError
from tellapart.train import TrainConfig, config_from_dict
from tellapart.train._config import deep_merge, yaml_load, yaml_mapping

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
    "set_key",
]

_SPACE_KEYS = {"base", "space", "sampler", "pruner", "fidelity", "metric", "direction", "trials", "stages"}
_STAGE_KEYS = (_SPACE_KEYS - {"stages"}) | {"name"}

#: Optuna's samplers by the name a space file uses (grid is built from the space itself).
SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "random": optuna.samplers.RandomSampler,
    "tpe": optuna.samplers.TPESampler,
    "qmc": optuna.samplers.QMCSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "brute_force": optuna.samplers.BruteForceSampler,
}

#: Rounds of successive halving in which a whole rung finishes before any promotion (see
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

#: Pruners whose rungs grow geometrically: data-subset rungs report at min_resource * factor**k.
_RUNG_PRUNERS = ("successive_halving", "hyperband")
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

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution (raises UserError naming the key when it is invalid)."""
        try:
            if self.type == "int":
                return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
            if self.type == "float":
                return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)  # type: ignore[arg-type]
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        except (ValueError, TypeError) as exc:
            raise UserError(f"space {self.key}: {exc}") from None

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

    kind: Literal["none", "data", "epochs"] = "none"  # data: rungs of nested train subsets; epochs: report every epoch
    fractions: tuple[float, ...] = (1.0,)  # data: training-set fraction of each rung, increasing
    epochs: tuple[int, ...] = ()  # data: epochs at each rung (default: the config's epochs at every rung)
    warm_start: bool = True  # data: a promoted trial continues from its previous rung's best weights

    @property
    def rungs(self) -> int:
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
            set_key(data, key, value)
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
        """The step each rung reports at: a geometric resource for successive halving/Hyperband,
        so every data-subset rung is one of the pruner's rungs; else 1, 2, 3..."""
        name = self.pruner.get("name")
        if self.fidelity.kind != "data" or name not in _RUNG_PRUNERS:
            return list(range(1, self.fidelity.rungs + 1))
        r = int(self.pruner.get("min_resource", 1))
        eta = int(self.pruner.get("reduction_factor", _DEFAULT_REDUCTION))
        s = int(self.pruner.get("min_early_stopping_rate", 0))
        return [r * eta ** (s + k) for k in range(self.fidelity.rungs)]

    def rung_plan(self, cfg: TrainConfig) -> list[tuple[float, int]]:
        """``(train_fraction, epochs)`` of each rung for a trial's config."""
        if self.fidelity.kind != "data":
            return [(cfg.train_fraction, cfg.epochs)]
        epochs = self.fidelity.epochs or (cfg.epochs,) * self.fidelity.rungs
        return list(zip(self.fidelity.fractions, epochs))

    def to_dict(self) -> dict[str, Any]:
        """Plain data identifying the study (stored with it, so a joining worker can check it)."""
        data = dataclasses.asdict(self)
        data.pop("trials")
        return json.loads(json.dumps(data, default=list))


def params_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable identity of one trial's values."""
    return tuple(sorted(params.items()))


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Sets ``data["a"]["b"] = value`` for ``"a.b"``, creating sections on the way."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"config key {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_fix(items: Iterable[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (values parsed as YAML) -> ``{key: value}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--fix expects key=value (e.g. model.args.width=64), got {item!r}")
        try:
            out[key.strip()] = yaml_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def bundled_spaces() -> list[str]:
    """Names of the search spaces shipped with tellapart (``tellapart tune --space NAME``)."""
    folder = resources.files("tellapart.tune") / "spaces"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _resolve(source: str | Path) -> tuple[str, str]:
    """(name, YAML text) of a path or a bundled name."""
    path = Path(source)
    if path.is_file():
        return path.stem, path.read_text()
    bundled = resources.files("tellapart.tune") / "spaces" / f"{source}.yaml"
    if "/" not in str(source) and bundled.is_file():
        return str(source), bundled.read_text()
    raise UserError(f"search space not found: {source} (a YAML file, or one of: {', '.join(bundled_spaces())})")


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
        default_name, text = _resolve(source)
        data = yaml_mapping(text, str(source), "a search space: a mapping with 'space:' (see tellapart/tune/spaces/)")
    name = name or default_name
    unknown = set(data) - _SPACE_KEYS
    if unknown:
        raise UserError(f"space {name}: unknown key(s) {sorted(unknown)}; expected some of {sorted(_SPACE_KEYS)}")
    fixed = parse_fix(fix) if not isinstance(fix, Mapping) else dict(fix)
    shared = {k: v for k, v in data.items() if k != "stages"}
    if "stages" not in data:
        return [_build(name, None, shared, fixed)]
    stages = data["stages"]
    if not isinstance(stages, list) or not stages:
        raise UserError(f"space {name}: 'stages' must be a non-empty list of {{name, space, ...}}")
    out, seen = [], set()
    for k, stage in enumerate(stages, 1):
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str):
            raise UserError(f"space {name}: stage {k} needs a 'name'")
        unknown = set(stage) - _STAGE_KEYS
        if unknown:
            raise UserError(f"space {name}: stage {stage['name']}: unknown key(s) {sorted(unknown)}")
        if stage["name"] in seen:
            raise UserError(f"space {name}: stage names must be unique ({stage['name']!r} twice)")
        seen.add(stage["name"])
        merged = {**shared, **{k2: v for k2, v in stage.items() if k2 != "name"}}
        if merged.get("space") and isinstance(merged["space"], dict) and set(merged["space"]) <= set(fixed):
            continue  # every key of this stage is fixed (--fix gave its winner): nothing to search
        merged["base"] = deep_merge(shared.get("base") or {}, stage.get("base") or {})
        out.append(_build(f"{name}.{stage['name']}", stage["name"], merged, fixed))
    if not out:
        raise UserError(f"space {name}: every key of every stage is fixed; nothing to search")
    return out


def _build(name: str, stage: str | None, data: Mapping[str, Any], fixed: Mapping[str, Any]) -> SearchSpace:
    where = f"space {name}"
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise UserError(f"{where}: 'base' must be a mapping of TrainConfig keys")
    raw_space = data.get("space") or {}
    if not isinstance(raw_space, dict):
        raise UserError(f"{where}: 'space' must map dotted config keys to distributions")
    params = tuple(_param(where, key, spec) for key, spec in raw_space.items() if key not in fixed)
    metric, direction = data.get("metric"), data.get("direction")
    if metric not in (None, "val_acc", "val_loss"):
        raise UserError(f"{where}: metric must be val_acc or val_loss, got {metric!r}")
    if direction not in (None, "maximize", "minimize"):
        raise UserError(f"{where}: direction must be maximize or minimize, got {direction!r}")
    metric = metric or ("val_loss" if direction == "minimize" else "val_acc")
    if direction and direction != ("maximize" if metric == "val_acc" else "minimize"):
        raise UserError(f"{where}: {metric} cannot be {direction}d (val_acc: maximize, val_loss: minimize)")
    trials = data.get("trials")
    if trials is not None and (not isinstance(trials, int) or trials < 1):
        raise UserError(f"{where}: trials must be a positive integer, got {trials!r}")
    space = SearchSpace(
        name=name,
        base=base,
        params=params,
        sampler=_named(where, "sampler", data.get("sampler") or {"name": "grid" if params and _all_discrete(params) else "tpe"}),
        pruner=_named(where, "pruner", data.get("pruner") or {"name": "none"}),
        fidelity=_fidelity(where, data.get("fidelity") or {}),
        metric=metric,
        trials=trials,
        stage=stage,
    )
    if fixed:
        space = space.fixed(fixed)
    _validate(space)
    return space


def _all_discrete(params: Sequence[Param]) -> bool:
    return all(p.type != "float" for p in params)


def _param(where: str, key: Any, spec: Any) -> Param:
    if not isinstance(key, str) or not key:
        raise UserError(f"{where}: space keys are dotted config keys, got {key!r}")
    if not isinstance(spec, dict):
        raise UserError(f"{where}: {key} needs a distribution, e.g. {{type: int, low: 1, high: 3}}")
    kind = spec.get("type")
    allowed = {"int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"}, "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise UserError(f"{where}: {key}: type must be int, float or categorical, got {kind!r}")
    unknown = set(spec) - allowed[kind]
    if unknown:
        raise UserError(f"{where}: {key}: unknown option(s) {sorted(unknown)} for type {kind}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: {key}: choices must be a non-empty list")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise UserError(f"{where}: {key}: choices must be numbers, strings, booleans or null (Optuna stores them)")
        param = Param(key, "categorical", choices=tuple(choices))
    else:
        for bound in ("low", "high"):
            if not isinstance(spec.get(bound), (int, float)) or isinstance(spec.get(bound), bool):
                raise UserError(f"{where}: {key}: {bound} must be a number, got {spec.get(bound)!r}")
        if kind == "int" and not all(float(spec[b]).is_integer() for b in ("low", "high")):
            raise UserError(f"{where}: {key}: an int range needs whole-number low and high")
        param = Param(key, kind, low=spec["low"], high=spec["high"], step=spec.get("step"), log=bool(spec.get("log", False)))
    param.distribution()
    return param


def _named(where: str, what: str, spec: Any) -> dict[str, Any]:
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise UserError(f"{where}: {what} must be a mapping with a 'name', e.g. {{name: tpe}}")
    return dict(spec)


def _fidelity(where: str, spec: Any) -> Fidelity:
    if not isinstance(spec, dict):
        raise UserError(f"{where}: fidelity must be a mapping, e.g. {{kind: data, fractions: [0.3, 0.675, 1.0]}}")
    unknown = set(spec) - {"kind", "fractions", "epochs", "warm_start"}
    if unknown:
        raise UserError(f"{where}: fidelity: unknown key(s) {sorted(unknown)}")
    kind = spec.get("kind", "none")
    if kind not in ("none", "data", "epochs"):
        raise UserError(f"{where}: fidelity.kind must be data, epochs or none, got {kind!r}")
    if kind != "data":
        if set(spec) - {"kind"}:
            raise UserError(f"{where}: fidelity.{sorted(set(spec) - {'kind'})[0]} applies to kind: data only")
        return Fidelity(kind=kind)
    fractions = spec.get("fractions")
    if not isinstance(fractions, list) or not fractions or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fractions):
        raise UserError(f"{where}: fidelity.fractions must be a list of training-set fractions in (0, 1]")
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise UserError(f"{where}: fidelity.fractions must increase (nested subsets), got {fractions}")
    epochs = spec.get("epochs") or []
    if isinstance(epochs, int):
        epochs = [epochs] * len(fractions)
    if not isinstance(epochs, list) or (epochs and len(epochs) != len(fractions)) or not all(isinstance(e, int) and e >= 1 for e in epochs):
        raise UserError(f"{where}: fidelity.epochs must be one positive int per fraction ({len(fractions)})")
    return Fidelity(kind="data", fractions=tuple(float(f) for f in fractions), epochs=tuple(epochs), warm_start=bool(spec.get("warm_start", True)))


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
        raise UserError(f"{where}: fidelity kind data sets train_fraction per rung; remove train_fraction from base")
    if space.fidelity.kind == "none" and space.pruner.get("name") != "none":
        raise UserError(f"{where}: pruner {space.pruner['name']} needs a fidelity (kind: data or epochs) to report to it")
    if space.pruner.get("name") in _RUNG_PRUNERS and space.fidelity.kind == "data":
        for key in ("min_resource", "reduction_factor", "min_early_stopping_rate"):
            value = space.pruner.get(key)
            if value is not None and (not isinstance(value, int) or value < (0 if key == "min_early_stopping_rate" else 1)):
                raise UserError(f"{where}: pruner.{key} must be a positive integer with data fidelity (rungs are steps), got {value!r}")
    if space.pruner.get("name") == SYNCHRONOUS_HALVING:
        if space.fidelity.kind != "data" or space.fidelity.rungs < 2:
            raise UserError(f"{where}: pruner {SYNCHRONOUS_HALVING} promotes between data rungs; add fidelity: {{kind: data, fractions: [0.111, 0.333, 1.0]}}")
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
    if name in _RUNG_PRUNERS:
        options.setdefault("reduction_factor", _DEFAULT_REDUCTION)
        if space.fidelity.kind == "data":
            options.setdefault("min_resource", 1)
            if name == "hyperband":
                options.setdefault("max_resource", space.steps()[-1])
    try:
        return PRUNERS[name](**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"space {space.name}: pruner {name}: {exc}") from None
