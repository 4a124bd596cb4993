"""One asyncio lock per key, held in a table that forgets a key once nobody holds or waits for it.

The book locks each pod by UID. A table that kept every key it was asked for grew with every
request naming a UID, known or not (20,000 deletes of random UIDs: 20,000 locks for ever);
this one is as large as the number of keys in use at this moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._table: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> (its lock, holders + waiters)

    def __len__(self) -> int:
        return len(self._table)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold `key`'s lock for the block (waiting for whoever holds it now)."""
        lock, users = self._table.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._table[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._table[key]
            if users == 1:
                del self._table[key]
            else:
                self._table[key] = (lock, users - 1)
