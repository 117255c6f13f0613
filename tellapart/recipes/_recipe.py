"""Recipes: YAML files that compose the project's own steps into one study of a seed.

A recipe file::

    description: one line for ``tellapart recipe list``
    source: {kind: paired}                 # how --data is opened (kind, class_map, pair_dirs)
    standin: {kind: synthetic_faces, args: {pairs: 1200, size: 160}}   # data it runs on here
    published: {data: "...", figures: {"CNN, test": "100%"}}          # the seed's own figures
    prepare: {size: 64, grayscale: false, fit: stretch, test: 1/6, val: 0.2, limit: null}
    base: {epochs: 20, normalize: unit}    # TrainConfig keys shared by every step
    steps:                                 # run in order; names default to the step's kind
      - ladder: {name: ladder, base: {...}, rungs: [{name, config}, ...]}
      - tune:   {name: grid, space: s1_grid, trials: null, fix: {model.args.width: 32}, fidelity: null}
      - train:  {name: fine_tune, config: {...}}
    baseline: linear                       # the candidate every other one should beat
    quick: {prepare: {...}, base: {...}, standin: {args: {...}}, steps: {STEP: {...}}}

Configs combine, later winning: ``base`` < a ladder's ``base`` < a rung's ``config``, and
``base`` < a train step's ``config``. A tune step starts from its space's own base; the recipe's
``base`` and the step's ``fix`` are fixed on top (so a key set there is no longer searched).

``quick`` holds the overrides of ``--quick``, deep-merged into the recipe: per step by name;
a ladder's ``rungs`` given as ``{rung name: config}`` merge into those rungs, as a list they
replace them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from tellapart._errors import UserError
from tellapart.data import PrepareConfig, Preprocess, SplitConfig
from tellapart.train import Rung
from tellapart.train._config import deep_merge, yaml_mapping

__all__ = [
    "LadderStep",
    "PrepareSpec",
    "Published",
    "Recipe",
    "SourceSpec",
    "StandinSpec",
    "Step",
    "TrainStep",
    "TuneStep",
    "list_recipes",
    "load_recipe",
]

_RECIPE_KEYS = {"description", "source", "standin", "published", "prepare", "base", "steps", "baseline", "quick"}
_QUICK_KEYS = {"source", "standin", "prepare", "base", "steps"}


@dataclass(frozen=True)
class SourceSpec:
    """How ``--data`` is opened (see ``tellapart.data.open_source``)."""

    kind: str = "auto"  # auto, folder, csv, archive, paired, idx or cifar
    class_map: str | None = None  # folder-id -> class-name file, relative to the data folder; used when it is there
    pair_dirs: tuple[str, str] = ("face", "comics")  # the two folders of the paired layout


@dataclass(frozen=True)
class PrepareSpec:
    """The cache: image side and colour, how non-square images fit, split shares, and a size limit."""

    size: int = 64  # side of the square cached images, px
    grayscale: bool = False  # one luma channel instead of RGB
    fit: str = "stretch"  # stretch, center-crop or pad
    test: float = 1 / 6  # test share when the source has no test split
    val: float = 0.2  # validation share of the training pool when the source has no val split
    seed: int = 0  # split (and limit) seed
    limit: int | None = None  # keep at most about this many images (stratified, groups whole); None: all

    def config(self) -> PrepareConfig:
        try:
            pre = Preprocess(size=self.size, grayscale=self.grayscale, fit=self.fit)  # type: ignore[arg-type]
        except ValueError as exc:
            raise UserError(f"recipe prepare: {exc}") from None
        return PrepareConfig(preprocess=pre, split=SplitConfig(test=self.test, val=self.val, seed=self.seed))


@dataclass(frozen=True)
class StandinSpec:
    """Data this recipe runs on where the seed's own cannot be had (``tellapart recipe standin``)."""

    kind: str  # a name in tellapart.recipes.STANDINS
    args: Mapping[str, Any] = field(default_factory=dict)  # the maker's keyword options


@dataclass(frozen=True)
class Published:
    """What the seed reported, shown beside tellapart's measured figure."""

    data: str  # the data the seed's figures are on
    figures: Mapping[str, str] = field(default_factory=dict)  # what -> figure, e.g. "CNN, test" -> "100%"


@dataclass(frozen=True)
class LadderStep:
    """Rungs trained on the same split and seed (``tellapart.train.run_ladder``)."""

    name: str
    base: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig keys over the recipe's base
    rungs: tuple[Rung, ...] = ()

    kind = "ladder"

    def candidates(self) -> list[str]:
        return [r.name for r in self.rungs]


@dataclass(frozen=True)
class TuneStep:
    """An Optuna study over a search space (``tellapart.tune.run_study``); its best trial is a candidate."""

    name: str
    space: str  # a bundled space name (s1_grid, s2_two_stage) or a YAML path
    trials: int | None = None  # finished trials per study (default: the space's; a grid: all of it)
    fix: Mapping[str, Any] = field(default_factory=dict)  # dotted config keys fixed in every trial
    budget: float | None = None  # seconds after which no new trial starts
    fidelity: Mapping[str, Any] | None = None  # replaces the space's fidelity, e.g. {kind: data, fractions: [0.5, 1.0]}

    kind = "tune"

    def candidates(self) -> list[str]:
        return [self.name]


@dataclass(frozen=True)
class TrainStep:
    """One training run (``tellapart.train.train``), e.g. a fine-tuned pretrained backbone."""

    name: str
    config: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig keys over the recipe's base

    kind = "train"

    def candidates(self) -> list[str]:
        return [self.name]


Step = LadderStep | TuneStep | TrainStep


@dataclass(frozen=True)
class Recipe:
    """A whole study: prepare once, run the steps, test the model best on validation once."""

    name: str
    description: str = ""
    source: SourceSpec = field(default_factory=SourceSpec)
    prepare: PrepareSpec = field(default_factory=PrepareSpec)
    base: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig keys every step shares
    steps: tuple[Step, ...] = ()
    baseline: str | None = None  # the candidate (rung or step name) the others should beat
    published: Published | None = None
    standin: StandinSpec | None = None
    quick: bool = False  # the --quick overrides are applied
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the resolved mapping, written with the results


# --------------------------------------------------------------------------- finding recipes


def _bundled() -> Any:
    return resources.files("tellapart.recipes")


def list_recipes() -> list[str]:
    """Names of the recipes shipped with tellapart (``tellapart recipe run NAME``)."""
    return sorted(p.name[: -len(".yaml")] for p in _bundled().iterdir() if p.name.endswith(".yaml"))


def _resolve(source: str | Path) -> tuple[str, str]:
    """(name, YAML text) of a recipe file or a bundled name."""
    path = Path(source)
    if path.is_file():
        return path.stem, path.read_text()
    bundled = _bundled() / f"{source}.yaml"
    if "/" not in str(source) and bundled.is_file():
        return str(source), bundled.read_text()
    raise UserError(f"recipe not found: {source} (a YAML file, or one of: {', '.join(list_recipes())})")


def load_recipe(source: str | Path, *, quick: bool = False) -> Recipe:
    """Reads and checks a recipe (a path or a bundled name), with its ``quick`` overrides if asked.

    Raises:
        UserError: unknown keys, wrong types or a malformed step, naming the key.
    """
    name, text = _resolve(source)
    return recipe_from_dict(name, yaml_mapping(text, f"recipe {name}", "a mapping with prepare: and steps:"), quick=quick)


def recipe_from_dict(name: str, data: Mapping[str, Any], *, quick: bool = False) -> Recipe:
    """Builds a Recipe from a parsed mapping (see the module docs for the keys)."""
    where = f"recipe {name}"
    _no_unknown(where, data, _RECIPE_KEYS)
    data = copy.deepcopy(dict(data))
    overrides = data.pop("quick", None) or {}
    if quick:
        data = _apply_quick(where, data, _mapping(where, "quick", overrides))
    steps = _steps(where, data.get("steps"))
    names = [c for s in steps for c in s.candidates()]
    if len(set(names)) != len(names) or len({s.name for s in steps}) != len(steps):
        raise UserError(f"{where}: step and rung names must be unique, got {[s.name for s in steps]} / {names}")
    baseline = data.get("baseline")
    if baseline is not None and baseline not in names:
        raise UserError(f"{where}: baseline {baseline!r} is no rung or step; choose one of {names}")
    standin = data.get("standin")
    published = data.get("published")
    return Recipe(
        name=name,
        description=str(data.get("description") or ""),
        source=_source(where, _mapping(where, "source", data.get("source") or {})),
        prepare=_prepare(where, _mapping(where, "prepare", data.get("prepare") or {})),
        base=_mapping(where, "base", data.get("base") or {}),
        steps=tuple(steps),
        baseline=baseline,
        published=_published(where, published) if published is not None else None,
        standin=_standin(where, standin) if standin is not None else None,
        quick=quick,
        raw=data,
    )


# --------------------------------------------------------------------------- parsing


def _mapping(where: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: {key} must be a mapping, got {value!r}")
    return dict(value)


def _no_unknown(where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")


def _apply_quick(where: str, data: dict[str, Any], quick: Mapping[str, Any]) -> dict[str, Any]:
    _no_unknown(f"{where}: quick", quick, _QUICK_KEYS)
    out = {k: deep_merge(_mapping(where, k, data.get(k) or {}), _mapping(f"{where}: quick", k, v)) for k, v in quick.items() if k != "steps"}
    data = {**data, **out}
    step_overrides = _mapping(f"{where}: quick", "steps", quick.get("steps") or {})
    steps = data.get("steps")
    if not isinstance(steps, list):
        return data  # _steps reports it
    seen = set()
    merged = []
    for entry in steps:
        if isinstance(entry, Mapping) and len(entry) == 1:
            kind, body = next(iter(entry.items()))
            body = dict(body or {}) if isinstance(body, Mapping) else body
            step_name = body.get("name", kind) if isinstance(body, dict) else kind
            if step_name in step_overrides and isinstance(body, dict):
                seen.add(step_name)
                body = _merge_step(f"{where}: quick: steps: {step_name}", body, _mapping(where, step_name, step_overrides[step_name]))
            entry = {kind: body}
        merged.append(entry)
    missing = sorted(set(step_overrides) - seen)
    if missing:
        raise UserError(f"{where}: quick: steps {missing} name no step of the recipe")
    return {**data, "steps": merged}


def _merge_step(where: str, body: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    rungs = override.get("rungs")
    if isinstance(rungs, Mapping):  # {rung name: config}: merged into those rungs
        current = body.get("rungs") or []
        names = [r.get("name") for r in current if isinstance(r, Mapping)]
        unknown = sorted(set(rungs) - set(names))
        if unknown:
            raise UserError(f"{where}: rungs {unknown} name no rung of the step ({names})")
        body = {**body, "rungs": [
            {**r, "config": deep_merge(r.get("config") or {}, _mapping(where, str(r["name"]), rungs[r["name"]]))}
            if isinstance(r, Mapping) and r.get("name") in rungs else r
            for r in current
        ]}
        override = {k: v for k, v in override.items() if k != "rungs"}
    return deep_merge(body, override)


def _steps(where: str, raw: Any) -> list[Step]:
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{where}: steps must be a non-empty list of ladder:, tune: or train: steps")
    steps: list[Step] = []
    for k, entry in enumerate(raw, 1):
        if not isinstance(entry, Mapping) or len(entry) != 1 or next(iter(entry)) not in _STEP_PARSERS:
            raise UserError(f"{where}: step {k} must be one of ladder:, tune: or train: with its settings, got {entry!r}")
        kind, body = next(iter(entry.items()))
        body = _mapping(f"{where}: step {k}", kind, body or {})
        steps.append(_STEP_PARSERS[kind](f"{where}: step {k} ({kind})", kind, body))
    return steps


def _ladder(where: str, kind: str, body: Mapping[str, Any]) -> LadderStep:
    _no_unknown(where, body, {"name", "base", "rungs"})
    rungs = body.get("rungs")
    if not isinstance(rungs, list) or not rungs:
        raise UserError(f"{where}: rungs must be a non-empty list of {{name, config}}")
    parsed = []
    for k, r in enumerate(rungs, 1):
        if not isinstance(r, Mapping) or "name" not in r or set(r) - {"name", "config"}:
            raise UserError(f"{where}: rung {k} must have 'name' and optionally 'config'")
        parsed.append(Rung(str(r["name"]), _mapping(where, f"rung {r['name']} config", r.get("config") or {})))
    return LadderStep(name=str(body.get("name", kind)), base=_mapping(where, "base", body.get("base") or {}), rungs=tuple(parsed))


def _tune(where: str, kind: str, body: Mapping[str, Any]) -> TuneStep:
    _no_unknown(where, body, {"name", "space", "trials", "fix", "budget", "fidelity"})
    space = body.get("space")
    if not isinstance(space, str) or not space:
        raise UserError(f"{where}: space must name a search space (s1_grid, s2_two_stage or a YAML path)")
    trials, budget = body.get("trials"), body.get("budget")
    if trials is not None and (not isinstance(trials, int) or isinstance(trials, bool) or trials < 1):
        raise UserError(f"{where}: trials must be a positive integer, got {trials!r}")
    if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget <= 0):
        raise UserError(f"{where}: budget must be a positive number of seconds, got {budget!r}")
    return TuneStep(
        name=str(body.get("name", kind)), space=space, trials=trials,
        fix=_mapping(where, "fix", body.get("fix") or {}), budget=float(budget) if budget is not None else None,
        fidelity=_mapping(where, "fidelity", body["fidelity"]) if body.get("fidelity") is not None else None,
    )


def _train(where: str, kind: str, body: Mapping[str, Any]) -> TrainStep:
    _no_unknown(where, body, {"name", "config"})
    return TrainStep(name=str(body.get("name", kind)), config=_mapping(where, "config", body.get("config") or {}))


_STEP_PARSERS = {"ladder": _ladder, "tune": _tune, "train": _train}


def _share(where: str, key: str, value: Any) -> float:
    """A split share: a number or a fraction written ``1/6``."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            pass
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise UserError(f"{where}: prepare.{key} must be a share such as 0.2 or 1/6, got {value!r}")


def _prepare(where: str, data: Mapping[str, Any]) -> PrepareSpec:
    allowed = {"size", "grayscale", "fit", "test", "val", "seed", "limit"}
    _no_unknown(f"{where}: prepare", data, allowed)
    for key in ("size", "seed", "limit"):
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1)):
            raise UserError(f"{where}: prepare.{key} must be a positive integer, got {value!r}")
    if not isinstance(data.get("grayscale", False), bool):
        raise UserError(f"{where}: prepare.grayscale must be true or false")
    shares = {k: _share(where, k, data[k]) for k in ("test", "val") if k in data}
    spec = PrepareSpec(**{**{k: v for k, v in data.items() if k not in shares}, **shares})
    spec.config()  # checks fit and shares now
    return spec


def _source(where: str, data: Mapping[str, Any]) -> SourceSpec:
    _no_unknown(f"{where}: source", data, {"kind", "class_map", "pair_dirs"})
    dirs = data.get("pair_dirs", ("face", "comics"))
    if not isinstance(dirs, (list, tuple)) or len(dirs) != 2 or not all(isinstance(d, str) and d for d in dirs):
        raise UserError(f"{where}: source.pair_dirs must be two folder names")
    return SourceSpec(kind=str(data.get("kind", "auto")), class_map=data.get("class_map"), pair_dirs=(dirs[0], dirs[1]))


def _published(where: str, data: Any) -> Published:
    data = _mapping(where, "published", data)
    _no_unknown(f"{where}: published", data, {"data", "figures"})
    figures = _mapping(where, "published.figures", data.get("figures") or {})
    return Published(data=str(data.get("data") or ""), figures={str(k): str(v) for k, v in figures.items()})


def _standin(where: str, data: Any) -> StandinSpec:
    data = _mapping(where, "standin", data)
    _no_unknown(f"{where}: standin", data, {"kind", "args"})
    if not isinstance(data.get("kind"), str):
        raise UserError(f"{where}: standin.kind must name a stand-in maker")
    return StandinSpec(kind=data["kind"], args=_mapping(where, "standin.args", data.get("args") or {}))


def flatten_keys(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values): nested config as tune's fixed keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_keys(value, dotted + "."))
        else:
            out[dotted] = value
    return out
