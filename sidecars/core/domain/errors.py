"""What the service core refuses: kinds of refusal of interlink_provider.refusals, whose table
gives each its HTTP status and gRPC code. The core raises them; the adapters answer them."""

from __future__ import annotations

from interlink_provider.refusals import BadRequest, Conflict, Exhausted, Forbidden, NotFound, Unavailable

__all__ = ["BadRequest", "Conflict", "Exhausted", "Forbidden", "NotFound", "Unavailable"]
