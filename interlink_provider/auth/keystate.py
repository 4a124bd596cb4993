"""One issuer's cached signing keys and the clock rules around them, apart from any I/O.

An IdP outage must neither refuse every valid token nor make each validation ask the IdP
again: after a failed fetch the next one waits (1 s, doubling up to a cap), and keys past
their maximum age stay in use for a grace period while they cannot be refreshed. All times
are on the monotonic clock, which starts near 0 at boot: "never" is None, not 0.0, or a host
booted minutes ago would take its first fetch for a recent one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import jwt

FIRST_RETRY_SECONDS = 1.0  # after the first failure of an episode; doubled after each further one


@dataclass(frozen=True)
class Timing:
    max_age: float  # keys are re-fetched when older
    cooldown: float  # least time between fetches forced by an unknown `kid`
    grace: float  # how long past max_age keys stay in use while they cannot be refreshed
    retry_max: float  # the longest wait between two tries after failures


@dataclass
class IssuerKeys:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float | None = None  # the last successful fetch
    forced_at: float | None = None  # the last successful fetch forced by an unknown `kid`
    failures: int = 0  # failed fetches since the last success: > 0 is a failure episode
    error: str | None = None  # why the last fetch failed (None: it did not)
    retry_at: float | None = None  # no fetch before this, after a failure
    # Held across a fetch: validations arriving meanwhile wait for it and share its outcome.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def age(self, now: float) -> float:
        """Seconds since the last fetch (infinite when never fetched)."""
        return float("inf") if self.fetched_at is None else now - self.fetched_at

    def since_forced(self, now: float) -> float:
        return float("inf") if self.forced_at is None else now - self.forced_at

    def fresh(self, now: float, timing: Timing) -> bool:
        return self.age(now) < timing.max_age

    def usable(self, now: float, timing: Timing) -> bool:
        """Fresh, or stale within the grace period (only reached when a refresh failed)."""
        return self.age(now) < timing.max_age + timing.grace

    def backing_off(self, now: float) -> bool:
        return self.retry_at is not None and now < self.retry_at

    def due(self, kid: str, now: float, timing: Timing) -> bool:
        """Whether to fetch now: keys stale, or `kid` unknown and no forced fetch within the cooldown;
        never while backing off after a failure."""
        if self.backing_off(now):
            return False
        if not self.fresh(now, timing):
            return True
        return kid not in self.keys and self.since_forced(now) >= timing.cooldown

    def fetched(self, keys: dict[str, jwt.PyJWK], now: float, forced: bool) -> int:
        """Record a successful fetch; returns how many failures it ends (0: none)."""
        ended = self.failures
        self.keys, self.fetched_at = keys, now
        if forced:
            self.forced_at = now
        self.failures, self.error, self.retry_at = 0, None, None
        return ended

    def failed(self, error: str, now: float, timing: Timing) -> bool:
        """Record a failed fetch and when to try again; True when it starts a failure episode."""
        self.failures += 1
        self.error = error
        wait = FIRST_RETRY_SECONDS * 2 ** min(self.failures - 1, 30)
        self.retry_at = now + min(timing.retry_max, wait)
        return self.failures == 1

    def retry_in(self, now: float) -> float:
        return 0.0 if self.retry_at is None else max(0.0, self.retry_at - now)
