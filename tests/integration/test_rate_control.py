"""The site's controller never feels us: a token bucket paces every scheduler command, new pods
queue for submission instead of holding their create calls, and deletions share scancels. On the
real local Slurm, with a sidecar limited to 2 commands per second."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from interlink_provider.cli.client import SidecarClient, pod_ref
from tests.helpers import Sidecar, slurm, wait_for
from tests.integration.test_rest_api import request_for
from tests.podkit import pod

pytestmark = pytest.mark.slurm
RATE, BURST, PODS = 2.0, 2, 24  # 24 pods take ~12 s to submit: the last is surely still queued
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}


@pytest.fixture(scope="module")
def paced(local_site, tmp_path_factory):
    sidecar = Sidecar(
        tmp_path_factory.mktemp("paced"),
        {
            "slurm": {"commands_per_second": RATE, "command_burst": BURST, "cancel_batch_seconds": 0.5},
            "create_wait_seconds": 1,
            "status": {"poll_interval": 1},
        },
    ).start()
    yield sidecar
    sidecar.stop()
    left = sidecar.live_jobs()  # a failed test must not leave 120 s sleepers holding the nodes for the next
    if left:
        slurm("scancel", *left, check=False)


async def commands(client: SidecarClient) -> dict[str, float]:
    text = await client.call("GET", "/metrics")
    found = re.findall(r'^ilp_scheduler_commands_total\{command="(\w+)",outcome="\w+"\} ([0-9.e+]+)$', text, re.M)
    counts: dict[str, float] = {}
    for name, value in found:  # every outcome
        counts[name] = counts.get(name, 0.0) + float(value)
    return counts


async def test_a_burst_is_paced_queued_and_submitted_once_each(paced):
    requests = [request_for(pod([{"name": "c", "image": "busybox", "command": ["sleep", "120"]}])) for _ in range(PODS)]
    async with SidecarClient(paced.address) as client:
        before = await commands(client)
        started = time.monotonic()
        # Concurrent creates reach the sidecar in any order, so the pod deleted while queued is
        # created after the burst: the ~20 pods still ahead of it take ~10 s to submit.
        answers = await asyncio.gather(*(client.create(r) for r in requests[:-1]))
        answers.append(await client.create(requests[-1]))
        answered = time.monotonic() - started
        # Queued pods answered without a job id instead of waiting for the rate limit.
        assert answers[-1]["PodJID"] == "" and answered < 5, (answers[-1], answered)
        last = requests[-1]["pod"]
        gone = await client.delete(last)  # still queued: never reaches sbatch
        assert "before submission" in gone

        async def all_submitted():
            statuses = await client.status([pod_ref(r["pod"]["metadata"]["uid"]) for r in requests[:-1]])
            return statuses if all(s.get("JID") for s in statuses) and len(statuses) == PODS - 1 else None

        await wait_for(all_submitted, 60, what="every queued pod to be submitted")
        elapsed = time.monotonic() - started
        after = await commands(client)
    used = sum(after.values()) - sum(before.values())
    assert used <= BURST + RATE * elapsed + 1, (used, elapsed)  # the bucket held
    assert after.get("sbatch", 0) - before.get("sbatch", 0) == PODS - 1
    for request in requests[:-1]:  # exactly one job per pod
        assert len(paced.jobs_named(paced.prefix + request["pod"]["metadata"]["uid"])) == 1
    assert paced.jobs_named(paced.prefix + last["metadata"]["uid"]) == []


async def test_deletions_share_scancels(paced):
    async with SidecarClient(paced.address) as client:
        listed = [p for p in await client.pods() if p["stage"] == "submitted"]
        assert len(listed) == PODS - 1
        before = await commands(client)
        pods = [{"metadata": {"uid": p["uid"], "name": p["name"], "namespace": p["namespace"]}} for p in listed]
        await asyncio.gather(*(client.delete(p) for p in pods))

        names = ",".join(paced.prefix + p["uid"] for p in listed)

        seen: list[str] = []

        async def all_ended():
            seen[:] = slurm("squeue", "-h", "--states=all", f"--name={names}", "-o", "%T").split()
            return len(seen) == len(listed) and not set(seen) & ACTIVE

        await wait_for(all_ended, 90, what=f"every job to end (states {seen})")
        after = await commands(client)
    scancels = after.get("scancel", 0) - before.get("scancel", 0)
    # 23 deletions: a signal (running jobs stop gracefully) and a cancel (pending ones), each batched
    assert 1 <= scancels <= 4, scancels


async def test_a_sidecar_killed_with_pods_in_the_queue_submits_each_exactly_once(paced):
    requests = [request_for(pod([{"name": "c", "image": "busybox", "command": ["true"]}])) for _ in range(16)]
    async with SidecarClient(paced.address) as client:
        answers = await asyncio.gather(*(client.create(r) for r in requests))
    assert any(a["PodJID"] == "" for a in answers)  # some were still queued...
    paced.kill()  # ...when the sidecar died (SIGKILL: no shutdown of any kind)
    paced.start()
    uids = [r["pod"]["metadata"]["uid"] for r in requests]
    async with SidecarClient(paced.address) as client:

        async def all_submitted():
            statuses = await client.status([pod_ref(uid) for uid in uids])
            return len(statuses) == len(uids) and all(s.get("JID") for s in statuses)

        await wait_for(all_submitted, 60, what="the queue to be worked off after the restart")
    for uid in uids:
        assert len(paced.jobs_named(paced.prefix + uid)) == 1, uid
