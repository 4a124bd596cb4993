"""The submission pipeline: new pods wait in a queue for a few submitters; each submission's crash
window is covered by the store.

A pod is submitted only once its SUBMITTING stage is committed, and the job id is committed
(stage SUBMITTED) right after the scheduler answers. A sidecar killed between the two finds the
pod in SUBMITTING on restart and looks for a job carrying its name before submitting again
(`resubmit`), so no pod is ever submitted twice. Transient refusals are retried with back-off
by the status cycle; permanent ones fail the pod with the scheduler's words.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time

from interlink_provider.telemetry import tracing
from sidecars.core.domain import status
from sidecars.core.domain.book import PodBook
from sidecars.core.domain.gangs import GangSubmissions
from sidecars.core.domain.records import PodRecord, Stage
from sidecars.core.kits import faults
from sidecars.core.kits.backend import Backend, PollError, SubmitError

log = logging.getLogger(__name__)


def submit_backoff(attempts: int) -> float:
    """Seconds before retrying a submission that failed `attempts` times (5 s doubling, at most 5 min)."""
    return float(min(300, 5 * 2 ** max(0, attempts - 1)))


class Submissions:
    def __init__(self, book: PodBook, backend: Backend, submitters: int, job_name_prefix: str = "") -> None:
        self.book = book
        self.backend = backend
        self._slots = asyncio.Semaphore(submitters)
        self.gangs = GangSubmissions(book, backend, job_name_prefix, self._slots, self._save_submitted, self._failed)
        self._submitter_count = submitters
        # Created pods wait here (stage ACCEPTED, no attempt yet) for a submitter.
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._submitters: list[asyncio.Task[None]] = []
        self._submitted: dict[str, asyncio.Future[None]] = {}
        self._traces: dict[str, tracing.Context] = {}  # the create's trace, for its queued submission

    def enqueue(self, uid: str) -> asyncio.Future[None]:
        """Queue a never-submitted pod (stage ACCEPTED); the future resolves once it left that stage."""
        if not self._submitters:  # in a context of their own, not the first pod's trace
            self._submitters = [
                asyncio.create_task(self._submitter(), name=f"submitter-{i}", context=contextvars.Context())
                for i in range(self._submitter_count)
            ]
        future = self._submitted.get(uid)
        if future is None:
            future = self._submitted[uid] = asyncio.get_running_loop().create_future()
            self._traces[uid] = tracing.remember()
            self._queue.put_nowait(uid)
        return future

    async def stop(self) -> None:
        for task in self._submitters:
            task.cancel()
        await asyncio.gather(*self._submitters, return_exceptions=True)

    async def _submitter(self) -> None:
        while True:
            uid = await self._queue.get()
            try:
                with tracing.span("submit", {tracing.POD_UID: uid}, parent=self._traces.pop(uid, None)):
                    await self._submit_queued(uid)
            except PollError as exc:  # the status cycle retries it
                log.warning("pod %s: submission deferred: %s", uid, exc)
            except Exception:  # a submitter must outlive any one pod
                log.exception("pod %s: submission failed unexpectedly", uid)
            finally:
                future = self._submitted.pop(uid, None)
                if future is not None and not future.done():
                    future.set_result(None)

    async def _submit_queued(self, uid: str) -> None:
        record = self.book.get(uid)
        if record is not None and record.summary.gang is not None:
            if record.stage == Stage.ACCEPTED and not record.submit_attempts:
                await self.gangs.arrived(record)  # held until its gang is complete
            return
        async with self.book.lock(uid):
            record = self.book.get(uid)
            if record is None or record.stage != Stage.ACCEPTED or record.submit_attempts:
                return  # deleted while queued, or already in the status cycle's hands
            record = await self.book.save(uid, stage=Stage.SUBMITTING)
            await self.submit(record)

    async def submit(self, record: PodRecord) -> PodRecord:
        """Submit a pod whose SUBMITTING stage is already committed (the caller holds its lock)."""
        async with self._slots:
            try:
                job_id = await self.backend.submit(
                    self.book.paths(record), record.job_name, record.account or None, record.summary.submit_options
                )
            except SubmitError as exc:
                return await self._failed(record, exc)
        faults.point("after-submit")
        return await self._save_submitted(record, job_id)

    async def _save_submitted(self, record: PodRecord, job_id: str, note: str = "") -> PodRecord:
        """The job id committed: the pod's job is the reconciler's to follow."""
        pending = status.waiting("Pending", f"{self.backend.display_name} job {job_id} submitted{note}")
        return await self.book.save(
            record.uid,
            stage=Stage.SUBMITTED,
            job_id=job_id,
            submitted_at=time.time(),
            message="",
            status=status.uniform_statuses(record.summary.containers, pending),
        )

    async def _failed(self, record: PodRecord, exc: SubmitError) -> PodRecord:
        containers = record.summary.containers
        if exc.permanent:
            log.warning("pod %s/%s: the scheduler refused the job: %s", record.namespace, record.name, exc.message)
            refused = status.terminated(
                1, "SchedulerRejected", f"{self.backend.display_name} refused the job: {exc.message}"
            )
            return await self.book.save(
                record.uid,
                stage=Stage.FINISHED,
                phase=status.FAILED,
                message=exc.message,
                finished_at=time.time(),
                status=status.uniform_statuses(containers, refused),
            )
        attempts = record.submit_attempts + 1
        delay = submit_backoff(attempts)
        log.warning(
            "pod %s/%s: submission failed (retry in %.0fs): %s", record.namespace, record.name, delay, exc.message
        )
        retrying = status.waiting("SubmitRetrying", f"{exc.message} (attempt {attempts}, next in {delay:.0f}s)")
        return await self.book.save(
            record.uid,
            stage=Stage.ACCEPTED,
            submit_attempts=attempts,
            next_attempt_at=time.time() + delay,
            message=exc.message,
            status=status.uniform_statuses(containers, retrying),
        )

    async def resubmit(self, record: PodRecord) -> PodRecord:
        """Retry or recover a submission: adopt a job that already carries the name, else submit."""
        if record.summary.gang is not None:
            await self.gangs.arrived(record)
            return self.book.get(record.uid) or record
        async with self.book.lock(record.uid):
            current = self.book.get(record.uid)
            if current is None or current.stage not in (Stage.ACCEPTED, Stage.SUBMITTING):
                return current or record
            found = (await self.backend.find_by_name([current.job_name])).get(current.job_name)
            if found is not None:
                log.info("pod %s/%s: adopting job %s found by name", current.namespace, current.name, found.job_id)
                return await self.book.save(
                    current.uid, stage=Stage.SUBMITTED, job_id=found.job_id, submitted_at=time.time()
                )
            if current.stage == Stage.ACCEPTED:
                current = await self.book.save(current.uid, stage=Stage.SUBMITTING)
            return await self.submit(current)
