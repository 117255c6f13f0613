"""A strict model registry (torchvision's ``register_model``, timm's ``list_models``).

A builder is a function whose arguments are all keyword-only: ``in_chans``,
``num_classes`` and ``input_size`` (required), then family options with defaults.
It returns a :class:`Classifier`.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tellapart._errors import UserError
from tellapart.models._base import Classifier
from tellapart.models._layers import check_int

__all__ = ["create_model", "list_models", "min_input_size", "model_kwargs", "register"]

Builder = Callable[..., Classifier]
F = TypeVar("F", bound=Builder)

# Every builder takes these; they describe the data, not the architecture.
_DATA_ARGS = ("in_chans", "num_classes", "input_size")


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    min_input_size: int  # smallest square side (px) the default options accept


_MODELS: dict[str, _Entry] = {}


def register(name: str, *, min_input_size: int = 1) -> Callable[[F], F]:
    """Decorator adding a builder to the registry under ``name``.

    Args:
        name: Registered name; a name already taken raises ValueError.
        min_input_size: Smallest square input side (px) the builder's default
            options accept; tests and the CLI use it.
    """

    def decorator(builder: F) -> F:
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        _check_builder(name, builder)
        _MODELS[name] = _Entry(builder, min_input_size)
        return builder

    return decorator


def _check_builder(name: str, builder: Builder) -> None:
    # A programming error, not a user one: fail at import time.
    params = inspect.signature(builder).parameters
    positional = [p for p in params.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    if positional:
        raise TypeError(f"builder {name!r}: every argument must be keyword-only, not {positional[0].name!r}")
    missing = [arg for arg in _DATA_ARGS if arg not in params]
    if missing:
        raise TypeError(f"builder {name!r} lacks the keyword argument(s) {', '.join(missing)}")
    no_default = [p.name for p in params.values() if p.name not in _DATA_ARGS and p.default is p.empty]
    if no_default:
        raise TypeError(f"builder {name!r}: option(s) {', '.join(no_default)} need a default")


def _entry(name: str) -> _Entry:
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _MODELS, n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise UserError(
            f"unknown model {name!r}; {hint}tellapart.models.list_models() lists all "
            f"{len(_MODELS)}: {', '.join(sorted(_MODELS))}"
        ) from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (case-sensitive), sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatchcase(name, pattern))


def model_kwargs(name: str) -> dict[str, Any]:
    """The options a model accepts besides the data arguments, with their defaults."""
    params = inspect.signature(_entry(name).builder).parameters
    return {p.name: p.default for p in params.values() if p.name not in _DATA_ARGS}


def min_input_size(name: str) -> int:
    """Smallest square input side (px) that ``name`` with default options accepts."""
    return _entry(name).min_input_size


def create_model(name: str, *, in_chans: int, num_classes: int, input_size: int, **kwargs: Any) -> Classifier:
    """Builds a registered model.

    Args:
        name: A name from :func:`list_models`.
        in_chans: Image channels (1 grey, 3 RGB).
        num_classes: Output units; 1 gives a single logit for a BCE-trained binary task.
        input_size: Square image side, px (flatten-based heads size themselves by it).
        **kwargs: Family options; :func:`model_kwargs` lists them with defaults.

    Returns:
        The model, with ``model_name`` and ``model_args`` set so a checkpoint can rebuild it.

    Raises:
        UserError: Unknown name or option, or an option value the model refuses.
    """
    entry = _entry(name)
    accepted = model_kwargs(name)
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, accepted, n=1)
            hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        raise UserError(
            f"model {name!r} got unknown option(s) {', '.join(hints)}; "
            f"it accepts: {', '.join(accepted) or 'no options'}"
        )
    data_args = {"in_chans": in_chans, "num_classes": num_classes, "input_size": input_size}
    for option, value in data_args.items():
        check_int(option, value)
    model = entry.builder(**data_args, **kwargs)
    model.model_name = name
    model.model_args = {**data_args, **kwargs}
    return model
