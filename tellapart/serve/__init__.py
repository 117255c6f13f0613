"""Serving: an HTTP API (FastAPI + uvicorn) with dynamic batching, limits and a page to try the model.

Needs the ``serve`` extra: ``pip install 'tellapart[serve]'``. ``import tellapart.serve`` works
without it; :func:`serve` then says what to install.
"""

from ._server import require_serve_extra, serve

__all__ = ["ServeConfig", "create_app", "model_card", "require_serve_extra", "serve"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # the app needs FastAPI: imported on use, so a missing extra is a clear error, not an ImportError here
    if name in ("ServeConfig", "create_app", "model_card"):
        require_serve_extra()
        from . import _app

        return getattr(_app, name)
    raise AttributeError(f"module 'tellapart.serve' has no attribute {name!r}")
