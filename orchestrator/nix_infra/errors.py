"""The one error type whose message is what the user sees."""

from __future__ import annotations


class NixInfraError(Exception):
    """A failure the user can act on; the CLI prints its message, no traceback.

    `exit_code` lets a caller ask for a specific process exit status.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
