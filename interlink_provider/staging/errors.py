"""Staging failures: which file, what went wrong, and whether trying again can help."""

from __future__ import annotations


class StagingError(Exception):
    """`reason` names the cause when it is not the data itself (e.g. TokenExpired): the pod shows it."""

    def __init__(self, message: str, *, transient: bool = False, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.reason = reason


class Cancelled(StagingError):
    def __init__(self) -> None:
        super().__init__("staging was cancelled")
