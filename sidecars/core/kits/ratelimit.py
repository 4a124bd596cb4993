"""Keeping the site's controller from ever feeling us.

Slurm limits RPCs per user with a token bucket (`SlurmctldParameters=rl_enable`:
bucket of 30, refilled at 2 per second by default) and answers callers over the
limit with errors. Ours is the same shape, set below the site's: every scheduler
command of the sidecar takes a token first, so whatever the number of pods, the
load on the controller never exceeds `rate` commands per second on average.
"""

from __future__ import annotations

import asyncio
import time

from interlink_provider.telemetry.metrics import THROTTLED


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; waiters are served in arrival order."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._turn = asyncio.Lock()  # FIFO: asyncio.Lock wakes waiters in order
        self.waited = 0.0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._turn:
            self._refill()
            if self._tokens < 1:
                delay = (1 - self._tokens) / self.rate
                self.waited += delay
                THROTTLED.inc(delay)
                await asyncio.sleep(delay)
                self._refill()
            self._tokens -= 1
