"""Who a validated token speaks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .scopes import Scope, covered


@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    scopes: tuple[Scope, ...] = ()
    groups: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    client_id: str = ""
    actor: str = ""  # `act.sub`: who exchanged the token on the subject's behalf
    expires_at: float = 0.0
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The owner key stored with each pod: issuer and subject together."""
        return f"{self.subject}@{self.issuer}"

    def has_scope(self, wanted: str) -> bool:
        return covered(list(self.scopes), wanted)
