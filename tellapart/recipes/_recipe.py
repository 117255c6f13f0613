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
from tellapart.config import bundled_names, deep_merge, load_dataclass, parse_mapping, resolve_bundled
from tellapart.data import PrepareConfig, Preprocess, SplitConfig
from tellapart.train import Rung

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

_QUICK_KEYS = {"source", "standin", "prepare", "base", "steps"}


@dataclass(frozen=True)
class SourceSpec:
    """How ``--data`` is opened (see ``tellapart.data.open_source``)."""

    kind: str = "auto"  # auto, folder, csv, archive, paired, idx or cifar
    class_map: str | None = None  # folder-id -> class-name file, relative to the data folder; used when it is there
    pair_dirs: tuple[str, str] = ("face", "comics")  # the two folders of the paired layout

    def __post_init__(self) -> None:
        if not all(self.pair_dirs):
            raise UserError("source.pair_dirs must be two folder names")


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

    def __post_init__(self) -> None:
        for key, value, least in (("size", self.size, 1), ("seed", self.seed, 0), ("limit", self.limit, 1)):
            if value is not None and value < least:
                raise UserError(f"{key} must be {'a positive' if least else 'a non-negative'} integer, got {value!r}")
        try:
            self.config()  # fit and the shares are checked where they are used
        except UserError as exc:
            raise UserError(str(exc).removeprefix("recipe prepare: ")) from None

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

    def __post_init__(self) -> None:
        if not self.kind:
            raise UserError("standin.kind must name a stand-in maker")


@dataclass(frozen=True)
class Published:
    """What the seed reported, shown beside tellapart's measured figure."""

    data: str = ""  # the data the seed's figures are on
    figures: Mapping[str, str] = field(default_factory=dict)  # what -> figure, e.g. "CNN, test" -> "100%"


@dataclass(frozen=True)
class LadderStep:
    """Rungs trained on the same split and seed (``tellapart.train.run_ladder``)."""

    name: str = "ladder"
    base: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig keys over the recipe's base
    rungs: tuple[Rung, ...] = ()

    kind = "ladder"

    def __post_init__(self) -> None:
        if not self.rungs:
            raise UserError("rungs must be a non-empty list of {name, config}")

    def candidates(self) -> list[str]:
        return [r.name for r in self.rungs]


@dataclass(frozen=True)
class TuneStep:
    """An Optuna study over a search space (``tellapart.tune.run_study``); its best trial is a candidate."""

    space: str  # a bundled space name (s1_grid, s2_two_stage) or a YAML path
    name: str = "tune"
    trials: int | None = None  # finished trials per study (default: the space's; a grid: all of it)
    fix: Mapping[str, Any] = field(default_factory=dict)  # dotted config keys fixed in every trial
    budget: float | None = None  # seconds after which no new trial starts
    fidelity: Mapping[str, Any] | None = None  # replaces the space's fidelity, e.g. {kind: data, fractions: [0.5, 1.0]}

    kind = "tune"

    def __post_init__(self) -> None:
        if not self.space:
            raise UserError("space must name a search space (s1_grid, s2_two_stage or a YAML path)")
        if self.trials is not None and self.trials < 1:
            raise UserError(f"trials must be a positive integer, got {self.trials!r}")
        if self.budget is not None and self.budget <= 0:
            raise UserError(f"budget must be a positive number of seconds, got {self.budget!r}")

    def candidates(self) -> list[str]:
        return [self.name]


@dataclass(frozen=True)
class TrainStep:
    """One training run (``tellapart.train.train``), e.g. a fine-tuned pretrained backbone."""

    name: str = "train"
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


@dataclass(frozen=True)
class RecipeFile:
    """The shape of a recipe YAML; ``prepare`` and ``steps`` are read on by :func:`recipe_from_dict`."""

    steps: list[Any]  # [{ladder|tune|train: {...}}, ...]
    description: str = ""
    source: SourceSpec = field(default_factory=SourceSpec)
    standin: StandinSpec | None = None
    published: Published | None = None
    prepare: Mapping[str, Any] = field(default_factory=dict)  # PrepareSpec keys; shares may be written 1/6
    base: Mapping[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    quick: Mapping[str, Any] = field(default_factory=dict)  # the --quick overrides


# --------------------------------------------------------------------------- finding recipes


def _bundled() -> Any:
    return resources.files("tellapart.recipes")


def list_recipes() -> list[str]:
    """Names of the recipes shipped with tellapart (``tellapart recipe run NAME``)."""
    return bundled_names(_bundled())


def load_recipe(source: str | Path, *, quick: bool = False) -> Recipe:
    """Reads and checks a recipe (a path or a bundled name), with its ``quick`` overrides if asked.

    Raises:
        UserError: unknown keys, wrong types or a malformed step, naming the key.
    """
    name, text = resolve_bundled(source, _bundled(), "recipe")
    return recipe_from_dict(name, parse_mapping(text, f"recipe {name}", "a mapping with prepare: and steps:"), quick=quick)


def recipe_from_dict(name: str, data: Mapping[str, Any], *, quick: bool = False) -> Recipe:
    """Builds a Recipe from a parsed mapping (see the module docs for the keys)."""
    where = f"recipe {name}"
    data = copy.deepcopy(dict(data))
    if not isinstance(data.get("steps"), list) or not data["steps"]:
        raise UserError(f"{where}: steps must be a non-empty list of ladder:, tune: or train: steps")
    shape = load_dataclass(RecipeFile, data, where=where)  # unknown keys and types, before quick merges in
    if quick:
        data = _apply_quick(where, data, dict(shape.quick))
        shape = load_dataclass(RecipeFile, data, where=f"{where} (quick)")
    data.pop("quick", None)
    steps = _steps(where, shape.steps)
    names = [c for s in steps for c in s.candidates()]
    if len(set(names)) != len(names) or len({s.name for s in steps}) != len(steps):
        raise UserError(f"{where}: step and rung names must be unique, got {[s.name for s in steps]} / {names}")
    if shape.baseline is not None and shape.baseline not in names:
        raise UserError(f"{where}: baseline {shape.baseline!r} is no rung or step; choose one of {names}")
    return Recipe(
        name=name, description=shape.description, source=shape.source, prepare=_prepare(where, shape.prepare),
        base=dict(shape.base), steps=tuple(steps), baseline=shape.baseline, published=shape.published,
        standin=shape.standin, quick=quick, raw=data,
    )


# --------------------------------------------------------------------------- parsing


def _mapping(where: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: {key} must be a mapping, got {value!r}")
    return dict(value)


def _no_unknown(where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (expected some of: {', '.join(sorted(allowed))})")


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


#: The step kinds a recipe's ``steps:`` list holds, by their key.
_STEP_KINDS: dict[str, type[LadderStep] | type[TuneStep] | type[TrainStep]] = {"ladder": LadderStep, "tune": TuneStep, "train": TrainStep}


def _steps(where: str, raw: list[Any]) -> list[Step]:
    steps: list[Step] = []
    for k, entry in enumerate(raw, 1):
        if not isinstance(entry, Mapping) or len(entry) != 1 or next(iter(entry)) not in _STEP_KINDS:
            raise UserError(f"{where}: step {k} must be one of ladder:, tune: or train: with its settings, got {entry!r}")
        kind, body = next(iter(entry.items()))
        steps.append(load_dataclass(_STEP_KINDS[kind], body or {}, where=f"{where}: step {k} ({kind})"))
    return steps


def _share(where: str, key: str, value: Any) -> Any:
    """A split share: a number or a fraction written ``1/6`` (anything else is left for the type check)."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"{where}: prepare.{key} must be a share such as 0.2 or 1/6, got {value!r}") from None
    return value


def _prepare(where: str, data: Mapping[str, Any]) -> PrepareSpec:
    shares = {k: _share(where, k, data[k]) for k in ("test", "val") if k in data}
    return load_dataclass(PrepareSpec, {**data, **shares}, where=f"{where}: prepare")


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
