"""An async iteration cut at a wall-clock deadline: a stream opened with a token ends when the
token does (a token that expires 3 s after the stream opens must not read for hours)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The deadline came before the iteration ended."""


async def until(deadline: float | None, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`items` while time.time() < `deadline` (None: no deadline); then DeadlinePassed."""
    if deadline is None:
        async for item in items:
            yield item
        return
    try:
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise DeadlinePassed
            try:
                item = await asyncio.wait_for(anext(items), left)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise DeadlinePassed from None
            yield item
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()
