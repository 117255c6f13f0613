"""Pieces the families share: activations and weight inits by name, and option checks.

Options arrive from YAML and the CLI, so every check raises ``UserError`` naming
the option and what it accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from tellapart._errors import UserError

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "POOLS",
    "apply_init",
    "check_bool",
    "check_choice",
    "check_int",
    "check_ints",
    "check_rate",
    "make_activation",
]

ACTIVATIONS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {
        "relu": nn.ReLU,
        "mish": nn.Mish,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "elu": nn.ELU,
        "leaky_relu": nn.LeakyReLU,  # torch's slope 0.01, not Keras' 0.3
    }
)

# 2×2 window, stride 2, no padding: Keras' MaxPooling2D/AveragePooling2D defaults.
POOLS: Mapping[str, Callable[[], nn.Module]] = MappingProxyType(
    {"max": lambda: nn.MaxPool2d(2), "avg": lambda: nn.AvgPool2d(2)}
)


def _keep_torch_default(module: nn.Module) -> None:
    del module  # torch layers initialise themselves on construction


def _he_uniform(module: nn.Module) -> None:
    # Keras he_uniform: U(±sqrt(6 / fan_in)) weights, zero biases. kaiming_uniform_
    # with the ReLU gain sqrt(2) gives exactly that bound.
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


INITS: Mapping[str, Callable[[nn.Module], None]] = MappingProxyType(
    {"default": _keep_torch_default, "he_uniform": _he_uniform}
)


def check_choice(option: str, value: Any, choices: Mapping[str, Any]) -> str:
    """Returns ``value`` if it names one of ``choices``, else raises UserError."""
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return value


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for a name in :data:`ACTIVATIONS`."""
    return ACTIVATIONS[check_choice("activation", name, ACTIVATIONS)]()


def apply_init(module: nn.Module, init: str) -> None:
    """Re-initialises every conv and linear layer inside ``module`` by an :data:`INITS` name."""
    INITS[check_choice("init", init, INITS)](module)


def check_bool(option: str, value: Any) -> bool:
    """Returns ``value`` if it is a bool (so a YAML string "false" is not read as true), else raises UserError."""
    if not isinstance(value, bool):
        raise UserError(f"{option} must be true or false; got {value!r}")
    return value


def check_int(option: str, value: Any, *, minimum: int = 1) -> int:
    """Returns ``value`` if it is an int >= ``minimum`` (bools refused), else raises UserError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{option} must be an integer >= {minimum}; got {value!r}")
    return value


def check_ints(option: str, value: Any) -> tuple[int, ...]:
    """Returns a sequence of positive ints as a tuple (YAML gives lists), else raises UserError."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise UserError(f"{option} must be a list of positive integers; got {value!r}")
    return tuple(check_int(f"{option}[{i}]", item) for i, item in enumerate(value))


def check_rate(option: str, value: Any) -> float:
    """Returns a dropout probability in [0, 1), else raises UserError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise UserError(f"{option} must be a probability in [0, 1); got {value!r}")
    return float(value)
