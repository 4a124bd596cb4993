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
from typing import Any

from interlink_provider.telemetry import tracing
from interlink_provider.telemetry.metrics import CYCLE_COMMANDS, CYCLE_SECONDS, PODS, TRACKED
from sidecars.core.domain import status
from sidecars.core.domain.service import SiteService
from sidecars.core.domain.staging import hold_running, spec_of
from sidecars.core.domain.store import (
    ACCEPTED,
    DELETED,
    DELETING,
    FINISHED,
    STAGING_IN,
    STAGING_OUT,
    SUBMITTED,
    SUBMITTING,
    TERMINAL_STAGES,
    PodRecord,
)
from sidecars.core.kits import faults
from sidecars.core.kits.backend import COMPLETED, FAILED, PENDING, JobInfo, ListsOwnJobs, PollError
from sidecars.core.kits.transport import TransportError

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, service: SiteService) -> None:
        self.service = service
        self.config = service.config
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
        service = self.service
        if service.staging is not None:
            service.staging.keep_only({r.uid for r in service.pods.values() if r.stage not in TERMINAL_STAGES})
        for record in [r for r in service.pods.values() if r.stage in (STAGING_IN, STAGING_OUT)]:
            if service.staging is not None:
                service.staging.start(record)  # interrupted staging starts again
        for record in [r for r in service.pods.values() if r.stage == ACCEPTED and not r.submit_attempts]:
            service.enqueue(record.uid)  # created, never submitted: back in the pipeline
        pending = [r for r in service.pods.values() if r.stage == SUBMITTING]
        for record in pending:
            try:
                await service.resubmit(record)
            except PollError as exc:
                log.warning("cannot recover submission of %s yet: %s", record.uid, exc)
        if not self.config.cancel_unknown_jobs or not isinstance(service.backend, ListsOwnJobs):
            return
        try:
            own = await service.backend.list_own(self.config.job_name_prefix)
        except PollError as exc:
            log.warning("cannot list our jobs to cancel strays: %s", exc)
            return
        known = {r.job_id for r in service.pods.values() if r.job_id}
        strays = [job.job_id for job in own if job.job_id not in known and not job.terminal]
        if strays:
            log.warning("cancelling %d jobs no pod owns: %s", len(strays), ", ".join(strays))
            await service.backend.cancel(strays)

    # ------------------------------------------------------------------ cycle

    async def cycle(self) -> None:
        """One pass over every pod; traced, so its scheduler commands have a parent."""
        with tracing.span("status cycle"):
            await self._cycle()

    async def _cycle(self) -> None:
        started = time.monotonic()
        commands = 0
        service = self.service
        now = time.time()
        active = [r for r in service.pods.values() if r.stage in (SUBMITTED, DELETING) and r.job_id]
        TRACKED.set(len(active))
        if active:
            ids = [r.job_id for r in active]
            try:
                jobs = await service.backend.query(ids)
                commands += 1
                gone = [job_id for job_id in ids if job_id not in jobs]
                if gone:
                    jobs.update(await service.backend.completed(gone))
                    commands += 1
            except PollError as exc:
                await self._poll_failed(active, str(exc))
            else:
                service.poll_error = ""
                faults.point("during-poll")
                for record in active:
                    async with service.lock(record.uid):
                        current = service.pods.get(record.uid)
                        if current is not None and current.job_id == record.job_id:
                            await self._refresh(current, jobs.get(record.job_id), now)
        commands += await self._deletions(now)
        await self._retries(now)
        await self._purge(now)
        self._export_phases()
        CYCLE_COMMANDS.set(commands)
        CYCLE_SECONDS.observe(time.monotonic() - started)
        self.cycles += 1

    async def _poll_failed(self, active: list[PodRecord], error: str) -> None:
        service = self.service
        if service.poll_error != error:
            log.warning("status poll failed, pods are Unknown: %s", error)
        service.poll_error = error
        message = f"cannot reach the scheduler: {error}"
        for record in active:
            if record.phase != status.UNKNOWN or record.message != message:
                await service.save(record.uid, phase=status.UNKNOWN, message=message)

    async def _refresh(self, record: PodRecord, job: JobInfo | None, now: float) -> None:
        service = self.service
        containers = service.containers(record)
        paths = service.paths(record)
        if job is not None:
            service.jobs[record.uid] = job
        files = {}
        if job is None or job.state != PENDING:
            try:
                files = await service.files.read_pod(paths, [c.name for c in containers])
            except TransportError as exc:
                log.warning("pod %s: cannot read its files this cycle: %s", record.uid, exc)
                return  # its last status stands; the next cycle reads again
        changes: dict[str, Any] = {}
        lost = False
        if job is None:
            missing_since = record.missing_since or now
            if record.missing_since is None:
                changes["missing_since"] = missing_since
            if files and all(f.exit_code is not None or f.skipped for f in files.values()):
                # Left the queue and accounting, but the runner recorded everything.
                worst = max((f.exit_code or 0) for f in files.values())
                job = JobInfo(record.job_id, COMPLETED if worst == 0 else FAILED, raw_state="ENDED")
            elif now - missing_since > self.config.status.lost_after:
                lost = True
            else:
                job = service.jobs.get(record.uid)  # last known: wait a little longer
        elif record.missing_since is not None:
            changes["missing_since"] = None
        view = status.PodView(
            containers=containers,
            job=job,
            files=files,
            terminating=record.stage == DELETING,
            lost=lost,
            scheduler=service.backend.display_name,
        )
        init, apps = status.pod_statuses(view)
        phase = status.vk_phase(init, apps)
        new_status = {"initContainers": init, "containers": apps}
        ended = lost or (job is not None and job.terminal)
        if new_status != record.status:
            changes["status"] = new_status
        if phase != record.phase:
            changes["phase"] = phase
        if job is not None and job.raw_state != record.job_state:
            changes["job_state"] = job.raw_state
        if record.message and not ended:
            changes["message"] = ""
        stage_out = (
            ended
            and record.stage == SUBMITTED
            and phase == status.SUCCEEDED
            and service.staging is not None
            and spec_of(record).outputs
        )
        if stage_out:
            # Not finished until the outputs are safe: hold the containers as running.
            changes.update(
                stage=STAGING_OUT,
                phase=status.RUNNING,
                status=hold_running(new_status),
                summary={**record.summary, "final_status": new_status},
                message="staging out",
            )
            ended = False
        if ended:
            changes["stage"] = DELETED if record.stage == DELETING else FINISHED
            changes["finished_at"] = now
            if lost:
                changes["message"] = f"job {record.job_id} was lost by the scheduler"
            try:
                await service.files.scrub(paths, record.summary.get("sensitive_volumes", []))
            except TransportError as exc:  # removed with the whole directory at the latest
                log.warning("pod %s: secrets not scrubbed yet: %s", record.uid, exc)
        if changes:
            record = await service.save(record.uid, **changes)
        if stage_out:
            service.staging.start(record)  # type: ignore[union-attr]

    async def _deletions(self, now: float) -> int:
        """Hard-cancel jobs whose grace period is over; settle deletions without a job."""
        service = self.service
        commands = 0
        for record in [r for r in service.pods.values() if r.stage == DELETING and not r.job_id]:
            async with service.lock(record.uid):  # a job may exist after all: find it by name
                try:
                    found = (await service.backend.find_by_name([record.job_name])).get(record.job_name)
                    commands += 1
                except PollError:
                    continue
                if found is not None and not found.terminal:
                    await service.backend.cancel([found.job_id], record.account or None)
                    commands += 1
                    await service.save(record.uid, job_id=found.job_id, hard_cancel_at=now + 2)
                else:
                    await service.save(record.uid, stage=DELETED, finished_at=now)
        due: dict[str, list[PodRecord]] = {}
        for record in service.pods.values():
            if (
                record.stage == DELETING
                and record.job_id
                and record.hard_cancel_at is not None
                and now >= record.hard_cancel_at
            ):
                due.setdefault(record.account, []).append(record)
        for account, records in due.items():  # one cancel per account for all that are due
            try:
                await service.backend.cancel([r.job_id for r in records], account or None)
                commands += 1
            except PollError as exc:
                log.warning("cancel of jobs %s failed, retrying: %s", ", ".join(r.job_id for r in records), exc)
                continue
            for record in records:  # ask again later until a status cycle sees the job end
                await service.save(record.uid, hard_cancel_at=now + max(10.0, self.config.status.poll_interval * 2))
        return commands

    async def _retries(self, now: float) -> None:
        service = self.service
        retry = [
            r for r in service.pods.values() if r.stage == ACCEPTED and r.submit_attempts and r.next_attempt_at <= now
        ]
        for record in retry:
            try:
                await service.resubmit(record)
            except PollError as exc:
                log.warning("submission retry of %s deferred: %s", record.uid, exc)
        for record in [r for r in service.pods.values() if r.stage == SUBMITTING]:
            # Only an interrupted submission is left in this stage for long.
            if now - record.updated_at > 60:
                try:
                    await service.resubmit(record)
                except PollError:
                    pass

    async def _purge(self, now: float) -> None:
        service = self.service
        retention = self.config.retention_seconds
        for record in [r for r in service.pods.values() if r.stage in TERMINAL_STAGES]:
            ended = record.finished_at or record.updated_at
            if record.stage == FINISHED and record.delete_requested_at is None:
                continue  # the Virtual Kubelet still owns it: keep until it deletes the pod
            if now - max(ended, record.delete_requested_at or 0) < retention:
                continue
            await service._remove_quietly(service.paths(record))
            await service.store.delete(record.uid)
            service.forget(record)

    def _export_phases(self) -> None:
        counts: dict[str, int] = {}
        for record in self.service.pods.values():
            counts[record.phase] = counts.get(record.phase, 0) + 1
        for phase in (status.PENDING, status.RUNNING, status.SUCCEEDED, status.FAILED, status.UNKNOWN):
            PODS.labels(self.service.config.site_name, phase).set(counts.get(phase, 0))


__all__ = ["DELETED", "FINISHED", "Reconciler"]
