"""The "mish" activation gives torch's Mish values and gradients, on every path it can take."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tellapart.models import ACTIVATIONS, Mish
from tellapart.models._layers import _FAST_MISH_MIN_ELEMENTS, _FusedMish


def _inputs(n: int) -> torch.Tensor:
    """``n`` values spanning -20..20 evenly, plus the extremes a network can produce."""
    extremes = torch.tensor([-1e4, -100.0, -88.0, -50.0, -20.5, -1e-7, 0.0, 1e-7, 19.99, 20.0, 20.01, 44.0, 89.0, 1e4])
    return torch.cat([extremes, torch.linspace(-20, 20, n - len(extremes))])


def _value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    y = fn(x)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    return y.detach(), grad


def _assert_matches_torch(x: torch.Tensor) -> None:
    ours, our_grad = _value_and_grad(Mish(), x)
    theirs, their_grad = _value_and_grad(F.mish, x)
    assert torch.isfinite(ours).all() and torch.isfinite(our_grad).all()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(our_grad, their_grad, atol=1e-5, rtol=1e-5)


def test_mish_is_the_registered_activation() -> None:
    assert ACTIVATIONS["mish"] is Mish


def test_small_tensors_match_torch_mish() -> None:
    _assert_matches_torch(_inputs(4001))


def test_big_tensors_take_the_one_pass_kernel_and_match_torch_mish() -> None:
    x = _inputs(_FAST_MISH_MIN_ELEMENTS).view(8, 4, -1, 16)
    assert _FusedMish.usable(x)
    _assert_matches_torch(x)


def test_mish_falls_back_to_torch_when_the_kernel_cannot_be_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(_FusedMish, "forward", None)
    monkeypatch.setattr(_FusedMish, "backward", None)
    monkeypatch.setattr(_FusedMish, "broken", False)
    monkeypatch.setattr(torch, "compile", refuse)
    x = _inputs(_FAST_MISH_MIN_ELEMENTS)
    _assert_matches_torch(x)
    assert _FusedMish.broken and not _FusedMish.usable(x)


def test_mish_backward_formula_matches_torch_without_compiling() -> None:
    from tellapart.models._layers import _mish_backward, _mish_forward

    x = _inputs(20001)
    torch.testing.assert_close(_mish_forward(x), F.mish(x), atol=1e-5, rtol=1e-5)
    _, their_grad = _value_and_grad(F.mish, x)
    torch.testing.assert_close(_mish_backward(x, torch.ones_like(x)), their_grad, atol=1e-5, rtol=1e-5)


def test_mish_under_bfloat16_autocast_matches_torch() -> None:
    x = _inputs(_FAST_MISH_MIN_ELEMENTS).to(torch.bfloat16)
    ours, theirs = Mish()(x), F.mish(x)
    assert ours.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), theirs.float(), atol=1e-2, rtol=1e-2)
