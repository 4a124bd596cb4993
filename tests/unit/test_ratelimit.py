"""The site's token bucket: bursts pass, then the rate holds, in arrival order."""

from __future__ import annotations

import asyncio

import pytest

from sidecars.core.kits.ratelimit import TokenBucket


async def test_a_burst_passes_then_the_rate_applies():
    bucket = TokenBucket(rate=20, burst=3)
    order: list[int] = []

    async def take(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(7)))
    assert order == list(range(7))  # first come, first served
    # 3 tokens saved up, then 4 more at 20/s: about 0.2 s of waiting in all
    assert bucket.waited == pytest.approx(4 / 20, abs=0.03)


async def test_an_idle_bucket_refills_only_up_to_its_burst():
    bucket = TokenBucket(rate=100, burst=2)
    await asyncio.sleep(0.1)  # would be 10 tokens without the cap
    for _ in range(4):
        await bucket.acquire()
    assert bucket.waited == pytest.approx(2 / 100, abs=0.01)


def test_nonsense_rates_are_refused():
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)
