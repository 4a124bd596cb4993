"""Long-lived calls (status watches, log follows) one identity may hold open at once.

Each holds a server slot for as long as it lives: without a share per identity, one token's
watches took every slot of the gRPC server (max_concurrent_rpcs) from everybody else. The
trusted unix socket (the interLink API server, following logs for all its users) has no share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from sidecars.core.domain.errors import Exhausted
from sidecars.core.domain.principal import LOCAL, Principal


class StreamQuota:
    def __init__(self, per_identity: int) -> None:
        self.per_identity = per_identity
        self._open: Counter[str] = Counter()  # principal key -> streams open

    def open_for(self, key: str) -> int:
        return self._open[key]

    @contextmanager
    def hold(self, principal: Principal) -> Iterator[None]:
        """One stream of `principal` for the block (Exhausted when its share is taken)."""
        key = principal.key
        if key == LOCAL.key:
            yield
            return
        if self._open[key] >= self.per_identity:
            raise Exhausted(
                f"you have {self._open[key]} streams open here, the most one identity may "
                f"(max_streams_per_identity: {self.per_identity}); close one first"
            )
        self._open[key] += 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]
