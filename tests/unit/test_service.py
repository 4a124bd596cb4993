"""The service core's rules, with in-memory test doubles of the backend and the site's files (the
store is the real SQLite): idempotent create, refusals that leave nothing behind, ownership,
deletion at each stage, submission failures, status and logs lookups."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from interlink_provider.pods.validate import PodRejected
from interlink_provider.pods.wire import ContainerLogOpts, LogStruct, RetrievedPodData
from interlink_provider.refusals import answer
from sidecars.core.domain import rebuild
from sidecars.core.domain.errors import BadRequest, Exhausted, Forbidden, Unavailable
from sidecars.core.domain.principal import LOCAL, Principal
from sidecars.core.domain.records import Stage
from sidecars.core.domain.service import SiteService
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.store import Store
from sidecars.core.kits import backend as b
from sidecars.core.kits.backend import SubmitError
from tests.doubles import InMemoryBackend, InMemoryFiles

ALICE = Principal("alice@idp", account="alice")
BOB = Principal("bob@idp", account="bob")


def request(name: str = "p", containers: int = 1, uid: str | None = None) -> RetrievedPodData:
    spec = {
        "restartPolicy": "Never",
        "containers": [
            {"name": f"c{i}", "image": "busybox", "command": ["sh", "-c", "true"]} for i in range(containers)
        ],
    }
    pod = {"metadata": {"name": name, "namespace": "ns", "uid": uid or str(uuid.uuid4())}, "spec": spec}
    return RetrievedPodData.model_validate({"pod": pod, "container": []})


@pytest.fixture
async def site(tmp_path) -> AsyncIterator[tuple[SiteService, InMemoryBackend, InMemoryFiles]]:
    settings = ServiceSettings(
        state_dir=str(tmp_path / "state"),
        pods_root=str(tmp_path / "pods"),
        runtime={"default": "sandbox"},
        create_wait_seconds=2,
        max_pods=10,
    )
    backend, files = InMemoryBackend(), InMemoryFiles()
    service = SiteService(settings, backend, Store(tmp_path / "state" / "db.sqlite"), files=files)
    await service.load()
    yield service, backend, files
    await service.stop()
    await service.book.store.close()


async def test_create_submits_once_and_a_repeat_answers_the_same_job(site):
    service, backend, files = site
    data = request()
    first = await service.create(data, ALICE)
    again = await service.create(data, ALICE)
    assert first.created and not again.created and again.job_id == first.job_id == "100"
    assert backend.called("submit") == [(f"ilp-{first.uid}", "alice")]
    record = service.record(first.uid)
    assert record is not None and record.stage == Stage.SUBMITTED and record.account == "alice"
    assert list(files.written) == [record.pod_dir]


async def test_another_identity_can_neither_repeat_read_nor_delete_the_pod(site):
    service, _, _ = site
    data = request()
    created = await service.create(data, ALICE)
    with pytest.raises(Forbidden, match="belongs to another identity"):
        await service.create(data, BOB)
    with pytest.raises(Forbidden):
        service.statuses([created.uid], BOB)
    with pytest.raises(Forbidden):
        await service.delete(created.uid, BOB)
    assert service.readable(BOB) == [] and [r.uid for r in service.readable(ALICE)] == [created.uid]
    admin = Principal("root@idp", site_admin=True)
    assert [s["UID"] for s in service.statuses([created.uid], admin)] == [created.uid]
    with pytest.raises(Forbidden):  # admins read, they do not act
        await service.delete(created.uid, admin)


async def test_a_rejected_pod_leaves_no_record_and_no_directory(site):
    service, backend, files = site
    bad = request()
    bad.pod.spec.containers[0].name = "Not_A_Name"
    with pytest.raises(PodRejected):
        await service.create(bad, ALICE)
    assert service.book.all() == [] and files.written == {} and backend.calls == []


async def test_an_unwritable_directory_is_unavailable_and_cleaned_up(site):
    service, backend, files = site
    files.fail_writes = True
    with pytest.raises(Unavailable, match="cannot write the pod's working directory: disk full"):
        await service.create(request(), ALICE)
    assert service.book.all() == [] and len(files.removed) == 1 and backend.called("submit") == []


async def test_a_permanent_refusal_fails_the_pod_and_a_transient_one_is_retried_later(site):
    service, backend, _ = site
    backend.submit_error = SubmitError("invalid partition", permanent=True)
    refused = await service.create(request("refused"), ALICE)
    record = service.record(refused.uid)
    assert record is not None and (record.stage, record.phase) == (Stage.FINISHED, "Failed")
    assert record.status.apps[0]["state"]["terminated"]["reason"] == "SchedulerRejected"
    backend.submit_error = SubmitError("slurmctld busy", permanent=False)
    later = await service.create(request("later"), ALICE)
    record = service.record(later.uid)
    assert record is not None and (record.stage, record.submit_attempts) == (Stage.ACCEPTED, 1)
    waiting = record.status.apps[0]["state"]["waiting"]
    assert record.next_attempt_at > time.time() and waiting["reason"] == "SubmitRetrying"
    assert "slurmctld busy (attempt 1, next in 5s)" == waiting["message"]


async def test_deletion_at_each_stage(site):
    service, backend, _ = site
    pending = await service.create(request("pending"), ALICE)
    assert await service.delete(pending.uid, ALICE) == "deleting"
    assert backend.called("cancel") == [((pending.job_id,), "alice")]  # not running: cancelled at once

    running = await service.create(request("running"), ALICE)
    backend.set_state(running.job_id, b.RUNNING)
    service.book.scheduler.jobs[running.uid] = backend.jobs[running.job_id]
    before = time.time()
    assert await service.delete(running.uid, ALICE) == "deleting"
    assert backend.called("signal") == [(running.job_id, "USR1", "alice")]  # preStop and grace first
    record = service.record(running.uid)
    assert record is not None and record.stage == Stage.DELETING
    assert record.hard_cancel_at is not None and record.hard_cancel_at >= before + 30 + 5

    assert await service.delete(running.uid, ALICE) == "already deleted"
    assert await service.delete(str(uuid.uuid4()), ALICE) == "not found"


async def test_a_pod_deleted_while_queued_is_never_submitted(site, monkeypatch):
    service, backend, _ = site
    gate = asyncio.Event()
    original = backend.submit

    async def held(*args: Any) -> str:
        await gate.wait()
        return await original(*args)

    monkeypatch.setattr(backend, "submit", held)
    service.config.create_wait_seconds = 0
    first = await service.create(request("first"), ALICE)  # a submitter holds it at the gate
    queued = [await service.create(request(f"q{i}"), ALICE) for i in range(service.config.max_concurrent_submits)]
    last = queued[-1]  # every submitter is busy: this one is still in the queue
    assert await service.delete(last.uid, ALICE) == "deleted before submission"
    gate.set()
    for _ in range(100):
        if not any(r.stage == Stage.SUBMITTING for r in service.book.all()):
            break
        await asyncio.sleep(0.02)
    submitted = {name for name, _ in backend.called("submit")}
    assert f"ilp-{first.uid}" in submitted and f"ilp-{last.uid}" not in submitted
    record = service.record(last.uid)
    assert record is not None and record.stage == Stage.DELETED


async def test_statuses_leave_out_unknown_pods_and_ping_counts_active_ones(site):
    service, _, _ = site
    created = await service.create(request(), LOCAL)
    answers = service.statuses([created.uid, str(uuid.uuid4())])
    assert [a["UID"] for a in answers] == [created.uid] and answers[0]["JID"] == created.job_id
    ping = await service.ping()
    assert ping.resources is not None and ping.resources.pods == "9"


async def test_logs_need_a_container_name_when_the_pod_has_several(site):
    service, _, files = site
    created = await service.create(request(containers=2), ALICE)
    with pytest.raises(BadRequest, match=r"a container name must be specified for pod p, choose one of: \[c0, c1\]"):
        service.logs(LogStruct(PodUID=created.uid, ContainerName="", Opts=ContainerLogOpts()), ALICE)
    with pytest.raises(BadRequest, match="container nope is not valid"):
        service.logs(LogStruct(PodUID=created.uid, ContainerName="nope", Opts=ContainerLogOpts()), ALICE)
    record = service.record(created.uid)
    assert record is not None
    files.logs[service.book.paths(record).log_file("c1")] = b"2026-01-01T00:00:00.000000000Z hello\n"
    chunks = service.logs(LogStruct(PodUID=created.uid, ContainerName="c1", Opts=ContainerLogOpts()), ALICE)
    assert b"".join([chunk async for chunk in chunks]) == b"hello\n"


async def test_max_pods_and_an_identitys_share_are_enforced_even_in_a_burst(site):
    """max_pods (10 here) holds: a burst of 15 concurrent creates gets 10 pods and 5 refusals
    (429 / RESOURCE_EXHAUSTED), a finished pod frees its place; with a share per identity, one
    identity cannot take the places of another."""
    service, backend, _ = site
    results = await asyncio.gather(
        *(service.create(request(f"p{i}"), ALICE) for i in range(15)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, Exhausted)]
    assert len(refused) == 5 and service.book.active() == 10
    assert "the site is full: 10 pods hold its 10 places (max_pods)" in str(refused[0])
    assert answer(refused[0]).http == 429 and answer(refused[0]).grpc == "RESOURCE_EXHAUSTED"
    done = next(r for r in results if not isinstance(r, BaseException))
    await service.book.save(done.uid, stage=Stage.FINISHED)  # its job ended
    assert (await service.create(request("after"), BOB)).created  # a place freed
    service.room.max_pods_per_identity = 9  # alice holds 9 (one of her 10 finished)
    service.room.max_pods = 100
    with pytest.raises(
        Exhausted, match=r"you have 9 pods here, the most one identity may have \(max_pods_per_identity: 9\)"
    ):
        await service.create(request("eleventh"), ALICE)
    assert (await service.create(request("bobs"), BOB)).created
    assert backend.called("submit")  # the admitted ones were submitted


async def test_requests_for_unknown_uids_leave_no_lock_behind(site):
    """The per-pod lock table holds the pods in use only: 2,000 deletes of random UIDs leave it empty."""
    service, _, _ = site
    created = await service.create(request(), ALICE)
    for _ in range(2000):
        assert await service.delete(str(uuid.uuid4()), ALICE) == "not found"
    assert service.book.locks_in_use() == 0
    await service.delete(created.uid, ALICE)
    assert service.book.locks_in_use() == 0


# ------------------------------------------------------------------ rebuilt records (site rebuild-state)


async def rebuilt(service: SiteService, account: str = "bob") -> str:
    """A record as `site rebuild-state` writes it for a live job of `account` in namespace ns."""
    uid = str(uuid.uuid4())
    pods_root = service.config.pods_root
    job = b.JobInfo("77", b.RUNNING, name=f"ilp-{uid}", user=account, work_dir=f"{pods_root}/{account}/ns/{uid}")
    await service.book.insert(rebuild.record_of(job, "ilp-", pods_root, own_account="ilp"))
    return uid


async def test_a_rebuilt_record_is_taken_by_a_delete_of_its_accounts_caller_and_only_that(site):
    service, _, _ = site
    uid = await rebuilt(service)
    with pytest.raises(Forbidden):  # another account's caller takes nothing
        await service.delete(uid, ALICE)
    assert service.record(uid).owner == rebuild.REBUILT_OWNER
    outcome = await service.delete(uid, BOB)  # behind the gateway the VK's delete names the UID only
    record = service.record(uid)
    assert record.owner == BOB.key and record.stage == Stage.DELETING, outcome


async def test_a_uid_only_status_call_takes_the_owner_and_a_pod_brings_the_containers(site):
    service, _, _ = site
    uid = await rebuilt(service)
    await service.claim_rebuilt_uids([uid], ALICE)
    assert service.record(uid).owner == rebuild.REBUILT_OWNER
    await service.claim_rebuilt_uids([uid], BOB)  # gRPC GetStatus
    assert service.record(uid).owner == BOB.key and service.record(uid).summary.containers == ()
    [answer] = service.statuses([uid], BOB)
    assert answer["JID"] == "77"


async def test_a_pod_of_another_namespace_does_not_take_a_rebuilt_record(site):
    service, _, _ = site
    uid = await rebuilt(service)
    pod = request(uid=uid).pod
    elsewhere = pod.model_copy(update={"metadata": pod.metadata.model_copy(update={"namespace": "other"})})
    await service.claim_rebuilt([elsewhere], BOB)
    assert service.record(uid).owner == rebuild.REBUILT_OWNER
    await service.claim_rebuilt([pod], BOB)
    record = service.record(uid)
    assert record.owner == BOB.key and record.name == "p" and [c.name for c in record.summary.containers] == ["c0"]
