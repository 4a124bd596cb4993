"""State that must not grow with every request: the per-pod lock table, the change feed's
tombstones, finished pods nobody deletes; and the gateway's status mirror across a resync."""

from __future__ import annotations

import asyncio

from interlink_provider.gateway.config import SiteLink
from interlink_provider.gateway.sites import Site
from interlink_provider.rpc.offloader.v1 import offloader_pb2 as pb
from sidecars.core.kits.changes import ChangeFeed
from sidecars.core.kits.keyedlocks import KeyedLocks


async def test_keyed_locks_exclude_per_key_and_forget_keys_nobody_holds():
    locks = KeyedLocks()
    order: list[str] = []

    async def worker(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(worker("a", "1"), worker("a", "2"), worker("b", "3"))
    assert order.index("1 out") < order.index("2 in")  # same key: one at a time
    assert order.index("3 in") < order.index("1 out")  # other key: alongside
    assert len(locks) == 0
    try:
        async with locks.hold("c"):
            assert len(locks) == 1
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert len(locks) == 0  # released on error too


async def test_the_feed_forgets_tombstones_past_its_bound_and_starts_a_new_epoch():
    feed = ChangeFeed(max_tombstones=3)
    epoch = feed.epoch
    for n in range(5):
        feed.touch(f"live{n}", "alice")
    for n in range(3):
        feed.touch(f"gone{n}", "alice", removed=True)
    assert feed.epoch == epoch and len(feed) == 8
    feed.touch("live0", "alice")  # still live: not a tombstone
    feed.touch("gone3", "alice", removed=True)  # the fourth: all tombstones forgotten
    assert feed.epoch != epoch and len(feed) == 5
    assert {uid for _, uid in feed.since(0, "alice")} == {f"live{n}" for n in range(5)}
    revision = feed.revision
    feed.touch("live1", "alice")
    assert feed.revision == revision + 1  # revisions go on across epochs


async def test_the_gateway_drops_pods_a_new_epochs_snapshot_leaves_out():
    """After a resync (sidecar restart, or its feed forgot removals) the pods not sent again
    before the first heartbeat are gone; a pod the gateway created meanwhile stays."""
    site = Site(SiteLink(name="alpha", target="127.0.0.1:1", audience="x"), tokens=None, heartbeat_seconds=5)  # type: ignore[arg-type]
    try:

        def pod(uid: str) -> pb.StatusEvent:
            return pb.StatusEvent(epoch="e2", revision=1, pod=pb.PodStatus(uid=uid, phase="Running"))

        site._apply(pb.StatusEvent(epoch="e1", revision=1, pod=pb.PodStatus(uid="kept", phase="Running")))
        site._apply(pb.StatusEvent(epoch="e1", revision=2, pod=pb.PodStatus(uid="purged", phase="Succeeded")))
        site._apply(pb.StatusEvent(epoch="e1", revision=2, heartbeat=True))
        site._apply(pod("kept"))  # the new epoch's snapshot
        site.pods.setdefault("new", pb.PodStatus(uid="new", phase="Pending"))  # created while it arrives
        assert set(site.pods) == {"kept", "purged", "new"}
        site._apply(pb.StatusEvent(epoch="e2", revision=1, heartbeat=True))
        assert set(site.pods) == {"kept", "new"}
        site._apply(pb.StatusEvent(epoch="e2", revision=2, heartbeat=True))
        assert set(site.pods) == {"kept", "new"}  # only once per resync
    finally:
        await site.channel.close()


async def test_until_cuts_an_iteration_at_its_deadline_and_closes_it():
    import time

    import pytest

    from sidecars.core.kits.deadline import DeadlinePassed, until

    closed = []

    async def ticks():
        try:
            for n in range(1000):
                yield n
                await asyncio.sleep(0.05)
        finally:
            closed.append(True)

    seen = []
    with pytest.raises(DeadlinePassed):
        async for n in until(time.time() + 0.3, ticks()):
            seen.append(n)
    assert 3 <= len(seen) <= 8 and closed == [True]
    assert [n async for n in until(None, aiter_of([1, 2]))] == [1, 2]


async def aiter_of(items):
    for item in items:
        yield item
