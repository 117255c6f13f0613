"""Config files, one owner: YAML mappings, merges, ``key=value`` overrides and strict dataclasses.

Every stage (train configs, ladders, search spaces, recipes, the CLI) reads its YAML through
this module, so a file is parsed the same way everywhere (``1e-3`` is a number), and a bad file
fails the same way: a :class:`~tellapart.UserError` naming the file, the line or the key, and the fix.

It imports nothing from tellapart's stage packages: every one of them may import it.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import dacite
import yaml

from tellapart._errors import UserError

__all__ = [
    "apply_assignments",
    "bundled_names",
    "deep_merge",
    "load_dataclass",
    "load_mapping",
    "parse_assignments",
    "parse_mapping",
    "resolve_bundled",
    "set_dotted",
    "to_plain",
    "yaml_load",
]

T = TypeVar("T")


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-3`` as a number, as YAML 1.2 does (PyYAML's YAML 1.1 reads text)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parses YAML safely, with exponent floats (``lr: 1e-3``) read as numbers.

    Raises:
        yaml.YAMLError: the text is not YAML (callers that know the file use :func:`parse_mapping`).
    """
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as ``line N: problem``: the line a user opens the file at, not PyYAML's dump."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


def parse_mapping(text: str, where: str, expected: str = "a mapping of config keys") -> dict[str, Any]:
    """A YAML document that must be a mapping (empty: ``{}``).

    Args:
        text: the document.
        where: what it is, for messages (a path, "recipe s3").
        expected: what the mapping should hold, e.g. "a mapping of config keys".

    Raises:
        UserError: not YAML (naming the line), or not a mapping.
    """
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not valid YAML ({_yaml_problem(exc)}); fix that line") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected {expected}, got a {type(data).__name__}")
    return data


def load_mapping(path: str | Path, expected: str = "a mapping of config keys", what: str = "config file") -> dict[str, Any]:
    """Reads a YAML file that must hold a mapping.

    Args:
        path: the file.
        expected: what the mapping should hold, for messages.
        what: what the file is, for a missing file's message ("ladder file").

    Raises:
        UserError: the file is missing or unreadable, not YAML (naming file and line), or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{p} is not a text file; give a YAML file") from None
    return parse_mapping(text, str(p), expected)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top, sections merged key by key (a new dict; neither input changes)."""
    out = dict(base)
    for key, value in override.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = deep_merge(out[key], value) if both else value
    return out


def set_dotted(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    """Sets ``mapping["a"]["b"]["c"] = value`` for ``"a.b.c"`` in place, creating sections on the way.

    Raises:
        UserError: a part on the way holds a value, not a section.
    """
    node = mapping
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"config key {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_assignments(items: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """``["a.b=1e-3", "c=[32, 64]"]`` -> ``{"a.b": 0.001, "c": [32, 64]}``; values are YAML-typed.

    A value that is not valid YAML is kept as the text typed (``name=a:b``).

    Args:
        items: ``key=value`` strings, as typed after ``option``.
        option: the command-line option they came from, for messages.

    Raises:
        UserError: an item without ``=`` or without a key, naming the item and the expected form.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{option} expects key=value (e.g. {option} optim.lr=1e-3), got {item!r}")
        try:
            out[key.strip()] = yaml_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def apply_assignments(data: Mapping[str, Any], items: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """A plain copy of ``data`` with ``key.sub=value`` strings applied (see :func:`parse_assignments`)."""
    out = to_plain(dict(data))
    for key, value in parse_assignments(items, option).items():
        try:
            set_dotted(out, key, value)
        except UserError as exc:
            raise UserError(f"{option}: {exc}") from None
    return out


def to_plain(value: Any) -> Any:
    """Mappings as dicts and tuples as lists, recursively: data YAML and JSON write as they read back."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def bundled_names(package_dir: Traversable) -> list[str]:
    """The names of the YAML files shipped in ``package_dir`` (``s3`` for ``s3.yaml``)."""
    return sorted(p.name[: -len(".yaml")] for p in package_dir.iterdir() if p.name.endswith(".yaml"))


def resolve_bundled(name_or_path: str | Path, package_dir: Traversable, kind: str) -> tuple[str, str]:
    """``(name, YAML text)`` of a file path, or of a bundled file named without its ``.yaml``.

    A path that exists wins over a bundled name, so a user's ``s3.yaml`` is never shadowed.

    Args:
        name_or_path: a path, or a bundled name such as ``s3``.
        package_dir: the package folder holding the bundled files (``importlib.resources.files(...)``).
        kind: what the file is, for messages ("recipe", "search space").

    Raises:
        UserError: neither a file nor a bundled name, listing the bundled names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path.stem, path.read_text()
    bundled = package_dir / f"{name_or_path}.yaml"
    if "/" not in str(name_or_path) and bundled.is_file():
        return str(name_or_path), bundled.read_text()
    names = ", ".join(bundled_names(package_dir))
    raise UserError(f"{kind} not found: {name_or_path} (a YAML file, or one of: {names})")


# --------------------------------------------------------------------------- strict dataclasses


def _int_to_float(value: Any) -> Any:
    """YAML's ``lr: 1`` is an int; a float field takes it as 1.0 (a bool stays an error)."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


_DACITE = dacite.Config(strict=True, cast=[tuple], type_hooks={float: _int_to_float})


def load_dataclass(cls: type[T], mapping: Mapping[str, Any], *, where: str, hint: str = "") -> T:
    """Builds the frozen dataclass ``cls`` from ``mapping``, strictly.

    Unknown keys, wrong types and values outside a ``Literal`` are errors naming the full key
    path (``optim.lr``) and ``where`` (the file); ints are accepted for floats and lists for tuples.
    Domain checks dacite cannot express (``low < high``) belong in the dataclass's ``__post_init__``
    as UserErrors; they surface prefixed with ``where``.

    Args:
        cls: a dataclass type, possibly nested.
        mapping: the parsed YAML.
        where: the file or part of it, for messages (``recipes/s3.yaml``, ``space s1_grid``).
        hint: appended to unknown-key errors, e.g. "see 'tellapart train --help'".

    Raises:
        UserError: naming ``where`` and the key.
    """
    if not isinstance(mapping, Mapping):
        raise UserError(f"{where}: expected a mapping of keys, got {mapping!r}")
    _check_keys(cls, mapping, "", where, hint)
    try:
        return dacite.from_dict(cls, dict(mapping), config=_DACITE)
    except dacite.UnexpectedDataError as exc:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(exc.keys))}{_suffix(hint)}") from None
    except dacite.MissingValueError as exc:
        raise UserError(f"{where}: {exc.field_path} is required") from None
    except dacite.DaciteError as exc:
        raise UserError(f"{where}: {exc}") from None
    except UserError as exc:  # a __post_init__ check: say which file it is about
        raise UserError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None


def _suffix(hint: str) -> str:
    return f"; {hint}" if hint else ""


def _dataclass_of(kind: Any) -> type | None:
    """The dataclass a field holds, also when it is optional (``Spec | None``)."""
    if dataclasses.is_dataclass(kind):
        return kind  # type: ignore[return-value]
    if typing.get_origin(kind) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(inner) == 1:
            return _dataclass_of(inner[0])
    return None


def _items_of(kind: Any) -> Any:
    """The item type of a ``tuple[X, ...]`` or ``list[X]`` field (also optional), else None."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return _items_of(inner[0]) if len(inner) == 1 else None
    args = typing.get_args(kind)
    if typing.get_origin(kind) is list and args:
        return args[0]
    if typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None


#: Plain field types checked here, so the message names the key path (dacite names no list index).
_SCALARS: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (int, float), bool: (bool,)}


def _check_keys(cls: type, data: Mapping[str, Any], prefix: str, where: str, hint: str) -> None:
    """What dacite reports poorly, by full key path: unknown keys, wrong plain types, Literal choices."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [f"{prefix}{k}" for k in data if k not in fields]
    if unknown:
        expected = ", ".join(sorted(fields))
        raise UserError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (expected some of: {expected}){_suffix(hint)}")
    missing = [f"{prefix}{f.name}" for f in dataclasses.fields(cls) if f.init and f.name not in data  # type: ignore[arg-type]
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    for key, value in data.items():
        _check_value(hints[key], value, f"{prefix}{key}", where, hint)


def _optional_of(kind: Any) -> Any:
    """``X`` for ``X | None`` (a value that is given is checked as an X); else ``kind`` itself."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return kind


def _check_value(kind: Any, value: Any, name: str, where: str, hint: str) -> None:
    if value is None:
        return  # dacite says whether the field may be null
    kind = _optional_of(kind)
    nested, items = _dataclass_of(kind), _items_of(kind)
    if nested is not None and isinstance(value, Mapping):
        _check_keys(nested, value, f"{name}.", where, hint)
    elif nested is not None and value is not None:
        raise UserError(f"{where}: {name} must be a mapping of keys, got {value!r}")
    elif items is not None and value is not None:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: {name} must be a list, got {value!r}")
        for k, item in enumerate(value, 1):
            _check_value(items, item, f"{name}[{k}]", where, hint)
    elif typing.get_origin(kind) in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: {name} must be a mapping of keys, got {value!r}")
        values = typing.get_args(kind)[1] if len(typing.get_args(kind)) == 2 else Any
        for key, item in value.items():  # e.g. a search space: dotted config key -> distribution
            _check_value(values, item, f"{name}[{key}]", where, hint)
    elif kind in _SCALARS and (isinstance(value, bool) != (kind is bool) or not isinstance(value, _SCALARS[kind])):
        what = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[kind]
        raise UserError(f"{where}: {name} must be {what}, got {value!r}")
    elif typing.get_origin(kind) is Literal and value not in typing.get_args(kind):
        choices = ", ".join(map(str, typing.get_args(kind)))
        raise UserError(f"{where}: {name} must be one of {choices}; got {value!r}")
