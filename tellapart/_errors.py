"""Errors a user can fix: the CLI prints them as one clear message, never a traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with the user's input (a file, a folder or an option) and how to fix it.

    The CLI catches it, prints ``error: <message>`` and exits with status 2.
    """
