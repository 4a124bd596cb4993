"""Who is calling the service core, as a protocol adapter authenticated them, and what they may do
with a pod: its owner (or the service acting for the owner) acts on it; site admins read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecars.core.domain.errors import Forbidden
from sidecars.core.domain.records import PodRecord


@dataclass(frozen=True)
class Principal:
    key: str  # stored as the pod's owner
    account: str | None = None  # local account their jobs run as (None: none named, the sidecar's own)
    actor: str = ""  # key of the service acting for them (a token's `act`), stored with the pod
    token: str | None = field(default=None, repr=False, compare=False)  # theirs, for staging's exchange
    site_admin: bool = False  # may read every pod (not act on them)

    def answers_for(self, record: PodRecord) -> bool:
        """The pod's owner, or the service that submitted it for them (a gateway acting for its users)."""
        return self.key in (record.owner, record.actor)

    def may_read(self, record: PodRecord) -> bool:
        return self.site_admin or self.answers_for(record)

    def check_owner(self, record: PodRecord) -> None:
        if not self.answers_for(record):
            # The UID the caller gave, nothing it did not know (not the owner's namespace or pod name).
            raise Forbidden(f"pod {record.uid} belongs to another identity")

    def check_reader(self, record: PodRecord) -> None:
        """Reading (status, logs) is for the owner, its actor, and the site's admins."""
        if not self.site_admin:
            self.check_owner(record)


# Tokenless callers on a trusted unix socket (the upstream interLink API server).
LOCAL = Principal("local:unix-socket")
