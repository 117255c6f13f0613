"""Pieces the families share: activations and weight inits by name, and option checks.

Options arrive from YAML and the CLI, so every check raises ``UserError`` naming
the option and what it accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tellapart._errors import UserError

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "POOLS",
    "Mish",
    "apply_init",
    "check_bool",
    "check_choice",
    "check_int",
    "check_ints",
    "check_rate",
    "make_activation",
]

_log = logging.getLogger(__name__)

# mish(x) = x·tanh(softplus(x)). With e = exp(x) and n = e·(e + 2), tanh(log(1 + e)) = n / (n + 2),
# so mish(x) = x·n / (n + 2): one exp instead of exp, log1p and tanh. Above x = 20 the ratio is 1
# in float32 (and n would overflow near x = 44), so mish(x) = x there exactly.
_MISH_LINEAR_ABOVE = 20.0
# Tensors smaller than this (elements) take torch's own kernel: the one-pass kernel only pays on big
# feature maps, and small runs (tests, tiny models) then never wait for it to be built.
_FAST_MISH_MIN_ELEMENTS = 1 << 21


def _mish_forward(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x.clamp(max=_MISH_LINEAR_ABOVE))
    n = e * (e + 2.0)
    return torch.where(x > _MISH_LINEAR_ABOVE, x, x * n / (n + 2.0))


def _mish_backward(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    # d/dx x·t = t + x·dt/dx, t = n / (n + 2), dt/dx = 2 / (n + 2)² · dn/dx, dn/dx = 2e·(e + 1).
    e = torch.exp(x.clamp(max=_MISH_LINEAR_ABOVE))
    n = e * (e + 2.0)
    slope = n / (n + 2.0) + 4.0 * x * e * (e + 1.0) / ((n + 2.0) * (n + 2.0))
    return grad * torch.where(x > _MISH_LINEAR_ABOVE, torch.ones_like(slope), slope)


class _FusedMish:
    """The forward and backward formulas, each compiled once into a single pass over memory.

    Eager, the formulas cost six passes (3.8x slower than torch's kernel); fused they beat
    torch's exp + log1p + tanh kernel. Built on first use; if torch.compile cannot build them
    (no C++ compiler, an unsupported platform), every later call uses torch's kernel.
    """

    forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    broken = False

    @classmethod
    def usable(cls, x: torch.Tensor) -> bool:
        return (
            not cls.broken
            and x.device.type == "cpu"  # on CUDA torch's kernel is already one memory-bound pass
            and x.numel() >= _FAST_MISH_MIN_ELEMENTS
            and x.is_floating_point()
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
            and not torch.compiler.is_compiling()  # a compiled model fuses mish itself
        )

    @classmethod
    def run(cls, fn: str, *args: torch.Tensor) -> torch.Tensor | None:
        """``fn``'s compiled result, or None once compiling has failed (the caller falls back)."""
        try:
            if cls.forward is None or cls.backward is None:
                cls.forward = torch.compile(_mish_forward, dynamic=True)
                cls.backward = torch.compile(_mish_backward, dynamic=True)
            return (cls.forward if fn == "forward" else cls.backward)(*args)
        except Exception as exc:  # noqa: BLE001  (any build failure: keep training on torch's kernel)
            cls.broken = True
            _log.info("mish: one-pass kernel unavailable (%s: %s); using torch's", type(exc).__name__, exc)
            return None


class _MishFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)  # what nn.Mish saves too: no extra memory
        out = _FusedMish.run("forward", x)
        return F.mish(x) if out is None else out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        out = _FusedMish.run("backward", x, grad)
        return _mish_backward(x, grad) if out is None else out


class Mish(nn.Module):
    """Mish (x·tanh(softplus(x))), the values of ``torch.nn.Mish`` at lower cost on big CPU tensors.

    Big CPU feature maps go through a one-pass kernel of the exact rewrite
    x·n / (n + 2), n = eˣ(eˣ + 2) (equal to torch's values to float32 rounding, forward
    and gradient); everything else, and any platform where the kernel cannot be built,
    uses ``torch.nn.functional.mish``. Parameter-free and stateless, so checkpoints of
    models built with ``nn.Mish`` load unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _FusedMish.usable(x):
            return _MishFunction.apply(x)
        return F.mish(x)


ACTIVATIONS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {
        "relu": nn.ReLU,
        "mish": Mish,
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
