"""What the service core refuses, in words any protocol adapter can turn into its own status."""

from __future__ import annotations


class NotFound(Exception):
    pass


class Forbidden(Exception):
    """The caller is authenticated but the pod is not theirs."""


class BadRequest(Exception):
    pass


class Unavailable(Exception):
    pass


__all__ = ["BadRequest", "Forbidden", "NotFound", "Unavailable"]
