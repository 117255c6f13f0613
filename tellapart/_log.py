"""Logging: the ``tellapart`` logger writes INFO and above to stderr unless the application configures it.

Like Optuna's ``optuna.logging``: the library logs through ``logging.getLogger("tellapart.<stage>")``;
a handler on the package's root logger prints the lines a person watching a command wants to see.
An application that configures logging itself can call :func:`disable_default_handler`.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["get_logger", "say", "set_verbosity", "disable_default_handler"]

_ROOT = "tellapart"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test capture and redirection included)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass


_handler: logging.Handler | None = None


def _configure() -> None:
    global _handler
    if _handler is not None:
        return
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger(_ROOT)
    root.addHandler(_handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    """The logger of one stage (``tellapart.train``, ``tellapart.fit``…), with the default handler set up."""
    _configure()
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")


def set_verbosity(level: int) -> None:
    """``logging.WARNING`` for ``--quiet``, ``logging.DEBUG`` for ``-v``; INFO by default."""
    _configure()
    logging.getLogger(_ROOT).setLevel(level)


def disable_default_handler() -> None:
    """Stops the stderr handler; messages then go wherever the application's logging sends them."""
    _configure()
    root = logging.getLogger(_ROOT)
    if _handler is not None:
        root.removeHandler(_handler)
    root.propagate = True


def say(progress: bool, text: str, stage: str = "tellapart") -> None:
    """One progress line at INFO on the stage's logger, when the caller asked for progress."""
    if progress:
        get_logger(stage).info(text)
