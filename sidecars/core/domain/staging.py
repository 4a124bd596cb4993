"""The staging phases of a pod on the site: stage-in before submission, stage-out after success.

Stage-in runs on the sidecar host (compute nodes usually have no outbound network)
while the pod waits with reason `StagingIn` and a progress message; then the job is
submitted. Stage-out runs after the job succeeded; until the outputs are registered
the pod is not reported finished (its containers are held as running), so that a
pod counts as Succeeded only once its results are safe. A deleted pod stops its
transfers; a restarted sidecar starts interrupted staging again (cached and
registered files make that cheap and idempotent; nothing partial is ever used).
The engine reaches the pod's volumes only through the site-files seam (`volumes.SiteVolumes`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from interlink_provider.auth.errors import AuthError, IdPUnreachable
from interlink_provider.pods.staging import StagingSpec
from interlink_provider.staging.engine import PodStaging, Stager
from interlink_provider.staging.errors import Cancelled, StagingError
from interlink_provider.telemetry import tracing
from interlink_provider.telemetry.metrics import STAGE_THROUGHPUT, STAGED_BYTES, STAGED_FILES, STAGING
from sidecars.core.domain import status
from sidecars.core.domain.book import PodBook
from sidecars.core.domain.errors import Forbidden, Unavailable
from sidecars.core.domain.records import JsonObject, PodRecord, PodStatuses, Stage
from sidecars.core.domain.submission import Submissions
from sidecars.core.domain.volumes import SiteVolumes
from sidecars.core.kits.sitefs import SiteFiles

log = logging.getLogger(__name__)
EXPORTS = ".exports"  # below the content cache: the outputs agents copy out for the sidecar
PROGRESS_SECONDS = 1.0
T = TypeVar("T")


class StagingPhases:
    def __init__(self, book: PodBook, submissions: Submissions, stager: Stager, files: SiteFiles) -> None:
        self.book = book
        self.submissions = submissions
        self.stager = stager
        self.files = files
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._pods: dict[str, PodStaging] = {}

    def _pod(self, record: PodRecord) -> PodStaging:
        return PodStaging(
            spec=record.staging,
            volumes=SiteVolumes(
                self.files.for_account(record.account),
                self.book.paths(record),
                record.account,
                Path(self.stager.config.cache_dir) / EXPORTS,
            ),
            namespace=record.namespace,
            name=record.name,
            uid=record.uid,
            credentials=self.stager.credentials_for(record.uid),
        )

    def check(self, spec: StagingSpec) -> str | None:
        """Why this site cannot stage what a pod declares, or None."""
        return self.stager.check(spec)

    async def enroll(self, uid: str, token: str, spec: StagingSpec) -> None:
        """Get the pod owner's storage and Rucio grant now: a refusal refuses the pod at create."""
        if self.stager.tokens is None:
            return
        try:
            await self.stager.tokens.enroll(uid, token, self.stager.output_scopes(spec))
        except IdPUnreachable as exc:
            raise Unavailable(f"cannot get storage tokens for the pod: {exc.message}") from exc
        except AuthError as exc:
            raise Forbidden(f"the pod's owner may not stage its data here: {exc.message}") from exc

    def forget(self, uid: str) -> None:
        """The pod stages nothing more: drop its storage grant."""
        if self.stager.tokens is not None:
            self.stager.tokens.forget(uid)

    def keep_only(self, uids: set[str]) -> None:
        if self.stager.tokens is not None:
            self.stager.tokens.keep_only(uids)

    def start(self, record: PodRecord) -> None:
        """Run the phase the record is in (at create, after a job, or after a restart)."""
        if record.uid in self._tasks and not self._tasks[record.uid].done():
            return
        runner = self._stage_in if record.stage == Stage.STAGING_IN else self._stage_out
        pod = self._pod(record)
        self._pods[record.uid] = pod
        self._tasks[record.uid] = asyncio.create_task(
            self._guard(runner, record.uid, pod), name=f"staging-{record.uid}"
        )

    def cancel(self, uid: str) -> None:
        pod = self._pods.get(uid)
        if pod is not None:
            pod.cancel.set()

    async def stop(self) -> None:
        for uid in list(self._tasks):
            self.cancel(uid)
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.stager.close()

    def progress(self, uid: str) -> str:
        pod = self._pods.get(uid)
        return pod.progress.describe() if pod else ""

    async def _guard(self, runner: Callable[[str, PodStaging], Awaitable[None]], uid: str, pod: PodStaging) -> None:
        try:
            await runner(uid, pod)
        except Exception:  # a bug must not leave the pod stuck silently
            log.exception("staging of %s failed unexpectedly", uid)
            await self._fail(uid, "StagingError", "internal error while staging (see the sidecar log)")
        finally:
            self._tasks.pop(uid, None)
            self._pods.pop(uid, None)
            record = self.book.get(uid)
            if record is None or record.stage.terminal:
                self.forget(uid)

    async def _with_progress(self, uid: str, pod: PodStaging, work: Coroutine[Any, Any, T], reason: str) -> T:
        """Run the transfer while keeping the pod's message up to date."""
        task = asyncio.create_task(work)
        while not task.done():
            await asyncio.wait({task}, timeout=PROGRESS_SECONDS)
            record = self.book.get(uid)
            if record is not None and record.stage.staging:
                message = f"{reason}: {pod.progress.describe()}"
                if record.message != message:
                    update: dict[str, Any] = {"message": message}
                    if record.stage == Stage.STAGING_IN:
                        waiting = status.waiting("StagingIn", message)
                        update["status"] = status.uniform_statuses(record.summary.containers, waiting)
                    await self.book.save(uid, **update)
        return task.result()

    def _count(self, direction: str, pod: PodStaging, seconds: float) -> None:
        """The finished phase in the metrics and on the pod's span."""
        done = pod.progress.bytes_done
        STAGED_BYTES.labels(direction).inc(done)
        STAGED_FILES.labels(direction).inc(pod.progress.files_done)
        STAGE_THROUGHPUT.labels(direction).observe(done / max(seconds, 1e-3))
        tracing.annotate({"ilp.stage.files": pod.progress.files_done, "ilp.stage.bytes": done})

    async def _stage_in(self, uid: str, pod: PodStaging) -> None:
        with tracing.span("stage-in", {tracing.POD_UID: uid}):
            await self._staged_in(uid, pod)

    async def _transfer(self, direction: str, uid: str, pod: PodStaging, work: Coroutine[Any, Any, T]) -> T:
        """One phase's transfers with progress, gauges and metrics (Cancelled and StagingError pass)."""
        STAGING.labels(direction).inc()
        started = time.monotonic()
        try:
            result = await self._with_progress(uid, pod, work, f"staging {direction}")
        finally:
            STAGING.labels(direction).dec()
        seconds = time.monotonic() - started
        self._count(direction, pod, seconds)
        log.info("pod %s: staged %s %s in %.1fs", uid, direction, pod.progress.describe(), seconds)
        return result

    @staticmethod
    def _failed(direction: str, uid: str, exc: StagingError) -> tuple[str, str]:
        """(reason, message) of a failed phase, logged and marked on its span."""
        reason = exc.reason or f"Stage{direction.capitalize()}Failed"
        log.warning("pod %s: stage-%s failed: %s", uid, direction, exc.message)
        tracing.failed(reason, exc.message)
        return reason, exc.message

    async def _staged_in(self, uid: str, pod: PodStaging) -> None:
        try:
            await self._transfer("in", uid, pod, self.stager.stage_in(pod))
        except Cancelled:
            return  # deleted while staging: the deletion settles the record
        except StagingError as exc:
            reason, message = self._failed("in", uid, exc)
            await self._fail(uid, reason, f"stage-in failed: {message}")
            return
        async with self.book.lock(uid):
            record = self.book.get(uid)
            if record is None or record.stage != Stage.STAGING_IN:
                return  # deleted meanwhile
            staged = f"staged in {pod.progress.describe()}"
            if record.summary.gang is None:
                record = await self.book.save(uid, stage=Stage.SUBMITTING, message=staged)
                await self.submissions.submit(record)
                return
            await self.book.save(uid, stage=Stage.ACCEPTED, message=staged)
        self.submissions.enqueue(uid)  # held until its gang is complete

    async def _stage_out(self, uid: str, pod: PodStaging) -> None:
        with tracing.span("stage-out", {tracing.POD_UID: uid}):
            try:
                await self._staged_out(uid, pod)
            finally:
                if isinstance(pod.volumes, SiteVolumes):
                    await pod.volumes.release()

    async def _staged_out(self, uid: str, pod: PodStaging) -> None:
        try:
            datasets = await self._transfer("out", uid, pod, self.stager.stage_out(pod))
        except Cancelled:
            return
        except StagingError as exc:
            reason, message = self._failed("out", uid, exc)
            await self._finish_out(uid, error=message, reason=reason)
            return
        await self._finish_out(uid, datasets=datasets, done=pod.progress.describe())

    async def _finish_out(
        self,
        uid: str,
        datasets: list[str] | None = None,
        done: str = "",
        error: str = "",
        reason: str = "StageOutFailed",
    ) -> None:
        async with self.book.lock(uid):
            record = self.book.get(uid)
            if record is None or record.stage != Stage.STAGING_OUT:
                return
            final = record.summary.final_status or record.status
            if error:
                final = _mark_failed(final, f"stage-out failed: {error}", reason)
                message = f"stage-out failed: {error}"
                phase = status.FAILED
            else:
                message = f"outputs registered in {', '.join(datasets or [])} ({done})"
                phase = status.phase_of(final)
            await self.book.save(
                uid, stage=Stage.FINISHED, status=final, phase=phase, message=message, finished_at=time.time()
            )

    async def _fail(self, uid: str, reason: str, message: str) -> None:
        async with self.book.lock(uid):
            record = self.book.get(uid)
            if record is None or record.stage.terminal:
                return
            failed = status.terminated(1, reason, message)
            await self.book.save(
                uid,
                stage=Stage.FINISHED,
                phase=status.FAILED,
                message=message,
                status=status.uniform_statuses(record.summary.containers, failed),
                finished_at=time.time(),
            )


def hold_running(final: PodStatuses) -> PodStatuses:
    """The statuses shown while outputs are staged out: app containers still running."""
    held = []
    for item in final.apps:
        terminated = item["state"].get("terminated") or {}
        held.append(
            {**item, "state": {"running": {"startedAt": terminated.get("startedAt")}}, "ready": False, "started": True}
        )
    return PodStatuses(final.init, tuple(held))


def _mark_failed(final: PodStatuses, message: str, reason: str) -> PodStatuses:
    containers: list[JsonObject] = []
    for item in final.apps:
        terminated = dict(item["state"].get("terminated") or {})
        terminated.update(
            exitCode=1,
            reason=reason,
            message=f"{message} (the container itself exited {terminated.get('exitCode', 0)})",
        )
        containers.append({**item, "state": {"terminated": terminated}})
    return PodStatuses(final.init, tuple(containers))
