"""tellapart: labelled images in; the best image classifier a compute budget allows out, with proof."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tellapart._errors import UserError

if TYPE_CHECKING:
    from tellapart.autofit import FitConfig, fit
    from tellapart.predict import load

__version__ = "0.1.0"

__all__ = ["FitConfig", "UserError", "__version__", "fit", "load"]


def __getattr__(name: str) -> Any:
    # ``tellapart.load`` and ``tellapart.fit`` import torch and the model code on first use, so
    # ``import tellapart`` stays light
    if name == "load":
        from tellapart.predict import load

        return load
    if name in ("fit", "FitConfig"):
        import tellapart.autofit

        return getattr(tellapart.autofit, name)
    raise AttributeError(f"module 'tellapart' has no attribute {name!r}")
