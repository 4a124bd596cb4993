"""Staging failures: which file, what went wrong, and whether trying again can help."""

from __future__ import annotations


class StagingError(Exception):
    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class Cancelled(StagingError):
    def __init__(self) -> None:
        super().__init__("staging was cancelled")
