"""The status cycle: one scheduler query for every tracked job, whatever their number.

Each cycle asks the scheduler about all active jobs at once (one `squeue`), asks
completion data only for jobs that left the queue (one `sacct`), reads the pod
runner's files for jobs that run or ended, and records what changed. It also
finishes deletions (hard cancel after the grace period, retried until the
scheduler confirms), retries transient submission failures, and forgets pods
whose retention has expired. A failed poll makes pods Unknown, never Failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from interlink_provider.telemetry import tracing
from interlink_provider.telemetry.metrics import (
    CYCLE_COMMANDS,
    CYCLE_SECONDS,
    GANG_MEMBERS_WAITING,
    PODS,
    TRACKED,
)
from sidecars.core.domain import status
from sidecars.core.domain.book import PodBook
from sidecars.core.domain.records import PodRecord, Stage
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.staging import StagingPhases, hold_running
from sidecars.core.domain.submission import Submissions
from sidecars.core.kits import faults
from sidecars.core.kits.backend import PENDING, Backend, JobInfo, ListsOwnJobs, PollError
from sidecars.core.kits.sitefs import SiteFiles
from sidecars.core.kits.transport import TransportError
from sidecars.core.kits.workdir import ContainerFiles, WorkdirError

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        config: ServiceSettings,
        book: PodBook,
        backend: Backend,
        files: SiteFiles,
        submissions: Submissions,
        staging: StagingPhases | None = None,
    ) -> None:
        self.config = config
        self.book = book
        self.backend = backend
        self.files = files
        self.submissions = submissions
        self.staging = staging
        self.scheduler = book.scheduler
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.cycles = 0

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop status updates for every pod
                log.exception("status cycle failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.status.poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    # ------------------------------------------------------------------ recovery

    async def recover(self) -> None:
        """At start-up: finish interrupted submissions, then deal with jobs nobody owns."""
        book = self.book
        if self.staging is not None:
            self.staging.keep_only({r.uid for r in book.all() if not r.stage.terminal})
            for record in book.in_stage(Stage.STAGING_IN, Stage.STAGING_OUT):
                self.staging.start(record)  # interrupted staging starts again
        for record in book.in_stage(Stage.ACCEPTED):
            if not record.submit_attempts:
                self.submissions.enqueue(record.uid)  # created, never submitted: back in the pipeline
        for record in book.in_stage(Stage.SUBMITTING):
            try:
                await self.submissions.resubmit(record)
            except PollError as exc:
                log.warning("cannot recover submission of %s yet: %s", record.uid, exc)
        if self.config.cancel_unknown_jobs and isinstance(self.backend, ListsOwnJobs):
            await self._cancel_strays(self.backend)

    async def _cancel_strays(self, backend: ListsOwnJobs) -> None:
        try:
            own = await backend.list_own(self.config.job_name_prefix)
        except PollError as exc:
            log.warning("cannot list our jobs to cancel strays: %s", exc)
            return
        known = {r.job_id for r in self.book.all() if r.job_id}
        strays = [job for job in own if job.job_id not in known and not job.terminal]
        if not strays:
            return
        log.warning("cancelling %d jobs no pod owns: %s", len(strays), ", ".join(j.job_id for j in strays))
        by_account: dict[str | None, list[str]] = {}
        for job in strays:  # each as the account it runs as (the transport acts as its own directly)
            by_account.setdefault(job.user or None, []).append(job.job_id)
        for account, job_ids in by_account.items():
            try:
                await self.backend.cancel(job_ids, account)
            except (PollError, TransportError) as exc:
                who = account or "the sidecar's own account"
                log.warning("cannot cancel the strays of %s (%s): %s", who, ", ".join(job_ids), exc)

    # ------------------------------------------------------------------ cycle

    async def cycle(self) -> None:
        """One pass over every pod; traced, so its scheduler commands have a parent."""
        with tracing.span("status cycle"):
            await self._cycle()

    async def _cycle(self) -> None:
        started = time.monotonic()
        now = time.time()
        active = [r for r in self.book.all() if r.stage.followed and r.job_id]
        TRACKED.set(len(active))
        commands = await self._poll(active, now) if active else 0
        commands += await self._deletions(now)
        await self._retries(now)
        await self._purge(now)
        self._export_phases()
        CYCLE_COMMANDS.set(commands)
        CYCLE_SECONDS.observe(time.monotonic() - started)
        self.cycles += 1

    async def _poll(self, active: list[PodRecord], now: float) -> int:
        """One query for all active jobs (and one for those that left the queue); the commands run."""
        ids = [r.job_id for r in active]
        commands = 0
        try:
            jobs = await self.backend.query(ids)
            commands += 1
            gone = [job_id for job_id in ids if job_id not in jobs]
            if gone:
                jobs.update(await self.backend.completed(gone))
                commands += 1
        except PollError as exc:
            await self._poll_failed(active, str(exc))
            return commands
        self.scheduler.poll_error = ""
        faults.point("during-poll")
        for record in active:
            async with self.book.lock(record.uid):
                current = self.book.get(record.uid)
                if current is not None and current.job_id == record.job_id:
                    await self._refresh(current, jobs.get(record.job_id), now)
        return commands

    async def _poll_failed(self, active: list[PodRecord], error: str) -> None:
        if self.scheduler.poll_error != error:
            log.warning("status poll failed, pods are Unknown: %s", error)
        self.scheduler.poll_error = error
        message = f"cannot reach the scheduler: {error}"
        for record in active:
            if record.phase != status.UNKNOWN or record.message != message:
                await self.book.save(record.uid, phase=status.UNKNOWN, message=message)

    async def _read_files(self, record: PodRecord, job: JobInfo | None) -> dict[str, ContainerFiles] | None:
        """The runner's files once the job runs or ended (None: unreadable this cycle)."""
        if job is not None and job.state == PENDING:
            return {}
        try:
            files = self.files.for_account(record.account)
            return await files.read_pod(self.book.paths(record), [c.name for c in record.summary.containers])
        except TransportError as exc:
            log.warning("pod %s: cannot read its files this cycle: %s", record.uid, exc)
            return None  # its last status stands; the next cycle reads again

    async def _refresh(self, record: PodRecord, job: JobInfo | None, now: float) -> None:
        if job is not None:
            self.scheduler.jobs[record.uid] = job
        files = await self._read_files(record, job)
        if files is None:
            return
        changes: dict[str, Any] = {}
        lost = False
        if job is None:
            missing_since = record.missing_since or now
            if record.missing_since is None:
                changes["missing_since"] = missing_since
            if files and all(f.exit_code is not None or f.skipped for f in files.values()):
                # Left the queue and accounting, but the runner recorded everything.
                job = status.ended_by_runner(record.job_id, files)
            elif now - missing_since > self.config.status.lost_after:
                lost = True
            else:
                job = self.scheduler.jobs.get(record.uid)  # last known: wait a little longer
        elif record.missing_since is not None:
            changes["missing_since"] = None
        view = status.PodView(
            containers=record.summary.containers,
            job=job,
            files=files,
            terminating=record.stage == Stage.DELETING,
            lost=lost,
            scheduler=self.backend.display_name,
        )
        new_status = status.statuses_of(view)
        phase = status.phase_of(new_status)
        ended = lost or (job is not None and job.terminal)
        outputs = self.staging is not None and bool(record.staging.outputs)
        if outputs and phase == status.SUCCEEDED and not ended:
            # The containers are done but the job has not left the queue: the outputs are
            # not even started, so the pod must not look finished yet.
            new_status, phase = hold_running(new_status), status.RUNNING
        if new_status != record.status:
            changes["status"] = new_status
        if phase != record.phase:
            changes["phase"] = phase
        if job is not None and job.raw_state != record.job_state:
            changes["job_state"] = job.raw_state
        if record.message and not ended:
            changes["message"] = ""
        stage_out = ended and record.stage == Stage.SUBMITTED and phase == status.SUCCEEDED and outputs
        if stage_out:
            # Not finished until the outputs are safe: hold the containers as running.
            changes.update(
                stage=Stage.STAGING_OUT,
                phase=status.RUNNING,
                status=hold_running(new_status),
                summary=replace(record.summary, final_status=new_status),
                message="staging out",
            )
            ended = False
        if ended:
            changes.update(await self._ended(record, lost, now))
        if changes:
            record = await self.book.save(record.uid, **changes)
        if stage_out and self.staging is not None:
            self.staging.start(record)

    async def _ended(self, record: PodRecord, lost: bool, now: float) -> dict[str, Any]:
        """The changes of a pod whose job ended; its secrets are scrubbed from the site."""
        changes: dict[str, Any] = {
            "stage": Stage.DELETED if record.stage == Stage.DELETING else Stage.FINISHED,
            "finished_at": now,
        }
        if lost:
            changes["message"] = f"job {record.job_id} was lost by the scheduler"
        try:
            files = self.files.for_account(record.account)
            await files.scrub(self.book.paths(record), list(record.summary.sensitive_volumes))
        except TransportError as exc:  # removed with the whole directory at the latest
            log.warning("pod %s: secrets not scrubbed yet: %s", record.uid, exc)
        return changes

    async def _deletions(self, now: float) -> int:
        """Hard-cancel jobs whose grace period is over; settle deletions without a job."""
        commands = await self._deletions_without_job(now)
        due: dict[str, list[PodRecord]] = {}
        for record in self.book.in_stage(Stage.DELETING):
            if record.job_id and record.hard_cancel_at is not None and now >= record.hard_cancel_at:
                due.setdefault(record.account, []).append(record)
        for account, records in due.items():  # one cancel per account for all that are due
            try:
                await self.backend.cancel([r.job_id for r in records], account or None)
                commands += 1
            except PollError as exc:
                log.warning("cancel of jobs %s failed, retrying: %s", ", ".join(r.job_id for r in records), exc)
                continue
            for record in records:  # ask again later until a status cycle sees the job end
                again = now + max(10.0, self.config.status.poll_interval * 2)
                await self.book.save(record.uid, hard_cancel_at=again)
        return commands

    async def _deletions_without_job(self, now: float) -> int:
        """A deletion that came while a submission was uncertain: a job may exist after all."""
        commands = 0
        for record in [r for r in self.book.in_stage(Stage.DELETING) if not r.job_id]:
            async with self.book.lock(record.uid):
                try:
                    found = (await self.backend.find_by_name([record.job_name])).get(record.job_name)
                    commands += 1
                except PollError:
                    continue
                if found is not None and not found.terminal:
                    await self.backend.cancel([found.job_id], record.account or None)
                    commands += 1
                    await self.book.save(record.uid, job_id=found.job_id, hard_cancel_at=now + 2)
                else:
                    await self.book.save(record.uid, stage=Stage.DELETED, finished_at=now)
        return commands

    async def _retries(self, now: float) -> None:
        for record in self.book.in_stage(Stage.ACCEPTED):
            if record.submit_attempts and record.next_attempt_at <= now:
                try:
                    await self.submissions.resubmit(record)
                except PollError as exc:
                    log.warning("submission retry of %s deferred: %s", record.uid, exc)
        for record in self.book.in_stage(Stage.SUBMITTING):
            # Only an interrupted submission is left in this stage for long.
            if now - record.updated_at > 60:
                try:
                    await self.submissions.resubmit(record)
                except PollError:
                    pass

    async def _purge(self, now: float) -> None:
        retention = self.config.retention_seconds
        for record in [r for r in self.book.all() if r.stage.terminal]:
            ended = record.finished_at or record.updated_at
            if record.stage == Stage.FINISHED and record.delete_requested_at is None:
                # The Virtual Kubelet still owns it and deletes it when it sees it finish; a
                # pod no client comes back for is kept for unclaimed_retention_seconds.
                if now - ended < self.config.unclaimed_retention_seconds:
                    continue
            elif now - max(ended, record.delete_requested_at or 0) < retention:
                continue
            await self._remove_directory(record)
            await self.book.remove(record)

    async def _remove_directory(self, record: PodRecord) -> None:
        paths = self.book.paths(record)
        try:
            await self.files.for_account(record.account).remove(paths)
        except (OSError, WorkdirError, TransportError) as exc:
            log.warning("cannot remove %s: %s", paths.pod_dir, exc)

    def _export_phases(self) -> None:
        counts: dict[str, int] = {}
        for record in self.book.all():
            counts[record.phase] = counts.get(record.phase, 0) + 1
        for phase in (status.PENDING, status.RUNNING, status.SUCCEEDED, status.FAILED, status.UNKNOWN):
            PODS.labels(self.config.site_name, phase).set(counts.get(phase, 0))
        held = [r for r in self.book.in_stage(Stage.ACCEPTED) if r.summary.gang is not None]
        GANG_MEMBERS_WAITING.set(len(held))
