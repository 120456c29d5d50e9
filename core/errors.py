"""Errors a user can act on.

Every error the engine raises on purpose derives from `DmtuiError`; the CLI prints
`message` and `hint` and exits non-zero, never a traceback.
"""

from __future__ import annotations


class DmtuiError(Exception):
    """A failure with a message for a person and, where possible, what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class LoadError(DmtuiError):
    """The dataset cannot be read at all, or (with --strict) a row was rejected."""


class WorkspaceError(DmtuiError):
    """A workspace is missing, unreadable, or no longer matches its dataset."""


class Cancelled(DmtuiError):
    """Long work stopped because its cancel event was set."""

    exit_code = 130
