"""The status cycle's rules, with in-memory test doubles of the backend and the site's files (the
store is the real SQLite): one query per cycle, Unknown (never Failed) when the scheduler cannot
be asked, a job that left the queue, a lost job, hard cancels after the grace period, recovery of
an interrupted submission without submitting twice, and the retention of deleted pods."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from interlink_provider.pods.staging import StageOutput, StagingSpec
from interlink_provider.pods.wire import RetrievedPodData
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.reconciler import Reconciler
from sidecars.core.domain.records import Stage
from sidecars.core.domain.service import SiteService
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.store import Store
from sidecars.core.kits import backend as b
from sidecars.core.kits.backend import PollError
from sidecars.core.kits.workdir import ContainerFiles
from tests.doubles import InMemoryBackend, InMemoryFiles

ALICE = Principal("alice@idp", account="alice")


def request(name: str) -> RetrievedPodData:
    pod = {
        "metadata": {"name": name, "namespace": "ns", "uid": str(uuid.uuid4())},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
            "volumes": [{"name": "token", "secret": {"secretName": "s"}}],
        },
    }
    return RetrievedPodData.model_validate(
        {"pod": pod, "container": [{"name": "c", "secrets": [{"metadata": {"name": "s"}, "data": {}}]}]}
    )


class Site:
    """A service core and its status cycle over the test doubles."""

    def __init__(self, tmp_path) -> None:
        self.settings = ServiceSettings(
            state_dir=str(tmp_path / "state"),
            pods_root=str(tmp_path / "pods"),
            runtime={"default": "sandbox"},
            status={"poll_interval": 1, "lost_after": 60},
            retention_seconds=100,
        )
        self.backend, self.files = InMemoryBackend(), InMemoryFiles()
        self.store_path = tmp_path / "state" / "db.sqlite"
        self.service = self._service()

    def _service(self) -> SiteService:
        return SiteService(self.settings, self.backend, Store(self.store_path), files=self.files)

    @property
    def reconciler(self) -> Reconciler:
        s = self.service
        return Reconciler(self.settings, s.book, self.backend, self.files, s.submissions, s.staging)

    async def restart(self) -> None:
        """A new service over the same store (the sidecar restarted)."""
        await self.close()
        self.service = self._service()
        await self.service.load()

    async def close(self) -> None:
        await self.service.stop()
        await self.service.book.store.close()

    def record(self, uid: str):
        record = self.service.record(uid)
        assert record is not None
        return record


@pytest.fixture
async def site(tmp_path) -> AsyncIterator[Site]:
    site = Site(tmp_path)
    await site.service.load()
    yield site
    await site.close()


async def test_one_query_per_cycle_for_every_job_and_accounting_only_for_those_gone(site):
    pods = [await site.service.create(request(f"p{i}"), ALICE) for i in range(5)]
    site.backend.leave_queue(pods[0].job_id, b.COMPLETED)
    site.backend.calls.clear()
    await site.reconciler.cycle()
    queries, completions = site.backend.called("query"), site.backend.called("completed")
    assert len(queries) == 1 and sorted(queries[0]) == sorted(p.job_id for p in pods)
    assert completions == [(pods[0].job_id,)]


async def test_a_failed_poll_makes_pods_unknown_never_failed_and_the_next_answer_clears_it(site):
    created = await site.service.create(request("p"), ALICE)
    site.backend.poll_error = PollError("squeue: slurmctld is down")
    await site.reconciler.cycle()
    record = site.record(created.uid)
    assert (record.phase, record.stage) == ("Unknown", Stage.SUBMITTED)
    assert record.message == "cannot reach the scheduler: squeue: slurmctld is down"
    assert site.service.poll_error == "squeue: slurmctld is down"
    site.backend.poll_error = None
    site.backend.set_state(created.job_id, b.RUNNING)
    site.files.runner[record.pod_dir] = {"c": ContainerFiles(started_at="2026-01-01T00:00:00.5Z")}
    await site.reconciler.cycle()
    record = site.record(created.uid)
    assert (record.phase, record.message, site.service.poll_error) == ("Running", "", "")


async def test_a_job_that_left_the_queue_ends_by_the_runners_files_and_its_secrets_are_scrubbed(site):
    created = await site.service.create(request("p"), ALICE)
    record = site.record(created.uid)
    site.backend.leave_queue(created.job_id)  # and no accounting
    site.files.runner[record.pod_dir] = {"c": ContainerFiles(started_at="t0", finished_at="t1", exit_code=0)}
    await site.reconciler.cycle()
    record = site.record(created.uid)
    assert (record.stage, record.phase) == (Stage.FINISHED, "Succeeded")
    assert site.files.scrubbed[record.pod_dir] == ["token"]


async def test_a_job_gone_without_a_trace_is_lost_after_lost_after(site, monkeypatch):
    created = await site.service.create(request("p"), ALICE)
    site.backend.leave_queue(created.job_id)
    await site.reconciler.cycle()
    record = site.record(created.uid)
    assert record.stage == Stage.SUBMITTED and record.missing_since is not None  # a grace before "lost"
    later = time.time() + 61
    monkeypatch.setattr("sidecars.core.domain.reconciler.time.time", lambda: later)
    await site.reconciler.cycle()
    record = site.record(created.uid)
    assert (record.stage, record.phase) == (Stage.FINISHED, "Failed")
    assert record.message == f"job {created.job_id} was lost by the scheduler"
    assert record.status.apps[0]["state"]["terminated"]["reason"] == "JobLost"


async def test_deletions_due_share_one_cancel_per_account_and_are_asked_again_until_the_job_ends(site):
    first = await site.service.create(request("a"), ALICE)
    second = await site.service.create(request("b"), ALICE)
    for created in (first, second):
        site.backend.set_state(created.job_id, b.RUNNING)
        site.service.book.scheduler.jobs[created.uid] = site.backend.jobs[created.job_id]
        await site.service.delete(created.uid, ALICE)  # graceful: signalled, cancel due after the grace
    await site.reconciler.cycle()
    assert site.backend.called("cancel") == []  # the grace period is not over
    for created in (first, second):
        await site.service.book.save(created.uid, hard_cancel_at=time.time() - 1)
    site.backend.jobs[first.job_id] = b.JobInfo(first.job_id, b.RUNNING, name=f"ilp-{first.uid}")
    await site.reconciler.cycle()
    [(job_ids, account)] = site.backend.called("cancel")
    assert sorted(job_ids) == sorted([first.job_id, second.job_id]) and account == "alice"
    record = site.record(first.uid)
    assert record.stage == Stage.DELETING and record.hard_cancel_at is not None
    assert record.hard_cancel_at >= time.time() + 9  # asked again later, unless the job has ended by then
    await site.reconciler.cycle()  # the scheduler now says the jobs were cancelled
    assert [site.record(c.uid).stage for c in (first, second)] == [Stage.DELETED, Stage.DELETED]


async def test_an_interrupted_submission_adopts_the_job_it_left_and_never_submits_twice(site):
    created = await site.service.create(request("p"), ALICE)
    # As if the sidecar died after the submit command answered but before the job id was saved:
    await site.service.book.save(created.uid, stage=Stage.SUBMITTING, job_id="")
    await site.restart()
    site.backend.calls.clear()
    await site.reconciler.recover()
    record = site.record(created.uid)
    assert (record.stage, record.job_id) == (Stage.SUBMITTED, created.job_id)
    assert site.backend.called("submit") == [] and len(site.backend.called("find_by_name")) == 1


async def test_an_interrupted_submission_without_a_job_is_submitted_once(site):
    created = await site.service.create(request("p"), ALICE)
    site.backend.jobs.pop(created.job_id)  # the submit command never reached the scheduler
    await site.service.book.save(created.uid, stage=Stage.SUBMITTING, job_id="")
    await site.restart()
    site.backend.calls.clear()
    await site.reconciler.recover()
    assert site.backend.called("submit") == [(f"ilp-{created.uid}", "alice")]
    assert site.record(created.uid).stage == Stage.SUBMITTED


async def test_deleted_pods_are_forgotten_after_their_retention_finished_ones_wait_for_deletion(site, monkeypatch):
    gone = await site.service.create(request("gone"), ALICE)
    kept = await site.service.create(request("kept"), ALICE)
    for created in (gone, kept):
        site.backend.leave_queue(created.job_id, b.COMPLETED)
    await site.reconciler.cycle()
    await site.service.delete(gone.uid, ALICE)
    later = time.time() + 101
    monkeypatch.setattr("sidecars.core.domain.reconciler.time.time", lambda: later)
    await site.reconciler.cycle()
    assert site.service.record(gone.uid) is None
    assert site.files.removed == [f"{site.settings.pods_root}/alice/ns/{gone.uid}"]
    assert site.record(kept.uid).stage == Stage.FINISHED  # the Virtual Kubelet has not deleted it yet
    assert (await site.service.book.store.get(gone.uid)) is None


async def test_finished_pods_nobody_deletes_are_purged_after_the_unclaimed_retention(site, monkeypatch):
    """The Virtual Kubelet deletes the pods it sees finish; one no client comes back for is kept
    for unclaimed_retention_seconds (a week by default), then purged with its directory."""
    assert site.settings.unclaimed_retention_seconds == 7 * 86400
    created = await site.service.create(request("orphan"), ALICE)
    site.backend.leave_queue(created.job_id, b.COMPLETED)
    await site.reconciler.cycle()
    assert site.record(created.uid).stage == Stage.FINISHED
    now = time.time()
    monkeypatch.setattr("sidecars.core.domain.reconciler.time.time", lambda: now + 6 * 86400)
    await site.reconciler.cycle()
    assert site.service.record(created.uid) is not None
    monkeypatch.setattr("sidecars.core.domain.reconciler.time.time", lambda: now + 8 * 86400)
    await site.reconciler.cycle()
    assert site.service.record(created.uid) is None
    assert site.files.removed == [f"{site.settings.pods_root}/alice/ns/{created.uid}"]


class StagingDouble:
    """Test double of the staging phases: records which pods were handed over for stage-out."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, record) -> None:
        self.started.append(record.uid)


async def test_a_pod_with_outputs_is_not_shown_finished_before_its_job_left_the_queue(site):
    created = await site.service.create(request("p"), ALICE)
    spec = StagingSpec(outputs=(StageOutput(mount="/data/out", scope="user"),))
    record = site.record(created.uid)
    await site.service.book.save(created.uid, summary=replace(record.summary, staging=spec))
    staging = StagingDouble()
    s = site.service
    reconciler = Reconciler(site.settings, s.book, site.backend, site.files, s.submissions, staging)  # type: ignore[arg-type]
    site.backend.set_state(created.job_id, b.RUNNING)  # the runner is done, the job still completing
    site.files.runner[record.pod_dir] = {"c": ContainerFiles(started_at="t0", finished_at="t1", exit_code=0)}
    await reconciler.cycle()
    record = site.record(created.uid)
    assert (record.stage, record.phase, staging.started) == (Stage.SUBMITTED, "Running", [])
    assert "running" in record.status.apps[0]["state"]
    site.backend.leave_queue(created.job_id, b.COMPLETED)
    await reconciler.cycle()
    record = site.record(created.uid)
    assert (record.stage, record.phase, staging.started) == (Stage.STAGING_OUT, "Running", [created.uid])


async def test_strays_are_cancelled_as_the_accounts_they_run_as(site):
    site.settings = site.settings.model_copy(update={"cancel_unknown_jobs": True})
    kept = await site.service.create(request("p"), ALICE)
    prefix = site.settings.job_name_prefix
    for job_id, user in (("901", "ilp-bob"), ("902", "ilp-bob"), ("903", "")):
        site.backend.jobs[job_id] = b.JobInfo(job_id, b.PENDING, name=f"{prefix}{job_id}", user=user)
    site.backend.jobs["904"] = b.JobInfo("904", b.PENDING, name="someone-elses", user="ilp-bob")
    site.backend.calls.clear()
    await site.reconciler.recover()
    assert sorted(site.backend.called("cancel")) == [(("901", "902"), "ilp-bob"), (("903",), None)]
    assert site.record(kept.uid).job_id not in {"901", "902", "903"}
