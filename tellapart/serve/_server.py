"""``serve``: load a model, build the app, run uvicorn on loopback until Ctrl-C."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tellapart._errors import UserError

if TYPE_CHECKING:
    from ._app import ServeConfig

__all__ = ["serve", "require_serve_extra"]


def require_serve_extra() -> None:
    """Raises a UserError naming the extra to install when the server stack is missing."""
    import importlib.util

    missing = []
    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (blocked)
            found = False
        if not found:
            missing.append(package)
    if missing:
        raise UserError(f"serving needs {', '.join(missing)}: pip install 'tellapart[serve]'")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(path: str | Path, *, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None, log_level: str = "info") -> None:
    """Serves the model ``path`` stands for (a run, export, ladder, study, recipe or chosen folder).

    Returns when the server has shut down (Ctrl-C / SIGTERM): in-flight requests finish first.
    """
    require_serve_extra()
    import uvicorn

    from tellapart.predict import load

    from ._app import ServeConfig, create_app

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be 0-65535, got {port}")
    predictor = load(path)
    print(f"model: {predictor.note}", file=sys.stderr)
    if not _is_loopback(host):
        print(f"warning: binding {host}, reachable from other machines; the API has no authentication", file=sys.stderr)
    app = create_app(predictor, config or ServeConfig(), origin=Path(path))
    print(f"serving {predictor.model_id} ({len(predictor.class_names)} classes) on http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False,
        timeout_keep_alive=5,  # seconds an idle connection stays open
        timeout_graceful_shutdown=10,  # seconds in-flight requests get at shutdown
        limit_concurrency=256,  # connections beyond this get 503 instead of piling up
    ))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after shutting down
        pass
    if not server.started:
        raise UserError(f"could not serve on {host}:{port} (is the port in use? choose another with --port)")
