"""The site service core: create, delete, status, logs and ping, whatever the protocol.

The REST plugin API (and later the gRPC server) are thin adapters over this
class. It owns the pod records (an in-memory cache over the SQLite store), the
per-pod locks that make create/delete idempotent and race-free, and the
submission path whose crash windows the store's stages cover.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from interlink_provider.pods import PodRejected, pod_to_jobspec
from interlink_provider.pods.annotations import RUNTIME
from interlink_provider.pods.annotations import field as annotation_field
from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.pods.wire import (
    AcceleratorResponse,
    LogStruct,
    PingResponse,
    ResourcesResponse,
    RetrievedPodData,
    TaintResponse,
    pod_status_json,
)
from interlink_provider.runtimes import Runtime, make_runtime
from interlink_provider.staging.engine import Stager
from interlink_provider.telemetry import tracing
from interlink_provider.telemetry.metrics import CREATES, DELETES, timed
from sidecars.core.domain import status
from sidecars.core.domain.errors import BadRequest, Forbidden, NotFound, Unavailable
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.staging import StagingPhases, spec_summary
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
    Store,
)
from sidecars.core.kits import faults, logs, workdir
from sidecars.core.kits.backend import (
    RUNNING,
    Backend,
    Capacity,
    JobInfo,
    PollError,
    ReportsCapacity,
    Signals,
    SubmitError,
)
from sidecars.core.kits.changes import ChangeFeed
from sidecars.core.kits.script import PodPaths
from sidecars.core.kits.sitefs import LocalFiles, SiteFiles
from sidecars.core.kits.transport import TransportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the protocol adapter authenticated them."""

    key: str  # stored as the pod's owner
    account: str | None = None  # local account their jobs run as (None: the sidecar's own)
    actor: str = ""  # key of the service acting for them (a token's `act`), stored with the pod
    token: str | None = field(default=None, repr=False, compare=False)  # theirs, for staging's exchange
    site_admin: bool = False  # may read every pod (not act on them)


# Tokenless callers on a trusted unix socket (the upstream interLink API server).
LOCAL = Principal("local:unix-socket")


@dataclass(frozen=True)
class CreateResult:
    uid: str
    job_id: str
    created: bool


def state_reason(record: PodRecord) -> str:
    """Why the pod is where it is: the sidecar's message, else the first container's reason."""
    if record.message:
        return record.message
    for container in [*record.status.get("initContainers", []), *record.status.get("containers", [])]:
        for state in container.get("state", {}).values():
            if isinstance(state, dict) and state.get("reason"):
                return f"{state['reason']}: {state['message']}" if state.get("message") else state["reason"]
    return ""


def submit_backoff(attempts: int) -> float:
    return float(min(300, 5 * 2 ** max(0, attempts - 1)))


class SiteService:
    def __init__(
        self,
        config: ServiceSettings,
        backend: Backend,
        store: Store,
        stager: Stager | None = None,
        files: SiteFiles | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.files = files or LocalFiles()  # where pod directories live: here, or over SSH
        self.store = store
        self.staging = StagingPhases(self, stager) if stager is not None else None
        self.pods: dict[str, PodRecord] = {}
        self.feed = ChangeFeed()  # every change of a record, for pushed status
        self.jobs: dict[str, JobInfo] = {}  # last scheduler answer per pod UID
        self.poll_error: str = ""
        self._locks: dict[str, asyncio.Lock] = {}
        self._submit_slots = asyncio.Semaphore(config.max_concurrent_submits)
        # The submission pipeline: created pods wait here (stage ACCEPTED, no attempt yet)
        # for a submitter; a create call waits for its job id only `create_wait_seconds`.
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._submitters: list[asyncio.Task[None]] = []
        self._submitted: dict[str, asyncio.Future[None]] = {}
        self._traces: dict[str, tracing.Context] = {}  # the create's trace, for its queued submission
        self._capacity: tuple[float, Capacity] | None = None
        self.options = config.render_options()

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        await self.store.open()
        for record in await self.store.all():
            self.pods[record.uid] = record
            self.feed.touch(record.uid, record.owner, record.actor)  # a new epoch's snapshot includes every known pod

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def paths(self, record: PodRecord | JobSpec) -> PodPaths:
        return PodPaths.for_pod(self.config.pods_root, record.namespace, record.uid)

    async def save(self, uid: str, **changes: Any) -> PodRecord:
        before = self.pods.get(uid)
        record = await self.store.update(uid, **changes)
        assert record is not None, f"pod {uid} vanished from the store"
        self.pods[uid] = record
        self.feed.touch(uid, record.owner, record.actor)
        if before is None or (before.stage, before.phase) != (record.stage, record.phase):
            self.log_state(record)
        return record

    def log_state(self, record: PodRecord) -> None:
        """One line per state change, its facts as fields (never env values or secrets)."""
        reason = state_reason(record)
        log.info(
            "pod %s/%s: %s, %s%s",
            record.namespace,
            record.name,
            record.stage,
            record.phase,
            f" ({reason})" if reason else "",
            extra={
                "pod_uid": record.uid,
                "namespace": record.namespace,
                "pod": record.name,
                "job_id": record.job_id,
                "site": self.config.site_name,
                "stage": record.stage,
                "phase": record.phase,
                "reason": reason,
            },
        )

    def forget(self, record: PodRecord) -> None:
        """The record is gone from the store: watchers learn that it was removed."""
        self.pods.pop(record.uid, None)
        self.jobs.pop(record.uid, None)
        self.feed.touch(record.uid, record.owner, record.actor)

    # ------------------------------------------------------------------ create

    def runtime_for(self, spec: JobSpec) -> Runtime:
        wanted = spec.pod_options.runtime or self.config.runtime.default
        allowed = {self.config.runtime.default, *self.config.runtime.allowed}
        if wanted not in allowed:
            raise PodRejected(
                f"runtime {wanted!r} is not offered here (choose one of {sorted(allowed)})",
                field=annotation_field(RUNTIME),
            )
        return make_runtime(wanted, self.config.runtime)  # type: ignore[arg-type]

    def summary(self, spec: JobSpec, runtime: Runtime, warnings: list[str]) -> dict[str, Any]:
        """What the store keeps about a pod: names and images, never env values or secrets."""
        return {
            "containers": [
                {
                    "name": c.name,
                    "image": c.image,
                    "init": c.is_init,
                    "restart_policy": c.restart_policy,
                }
                for c in spec.all_containers()
            ],
            "sensitive_volumes": [v.name for v in spec.volumes if v.sensitive],
            "grace": spec.grace_seconds,
            "runtime": runtime.name,
            "flavor": spec.flavor,
            "warnings": warnings,
            "staging": spec_summary(spec.staging) if spec.staging else None,
        }

    async def create(self, data: RetrievedPodData, principal: Principal = LOCAL) -> CreateResult:
        """Idempotent by pod UID. Raises PodRejected for pods this site cannot run."""
        with timed("create"), tracing.span("sidecar create", {tracing.POD_UID: data.pod.metadata.uid or ""}):
            return await self._create(data, principal)

    async def _create(self, data: RetrievedPodData, principal: Principal) -> CreateResult:
        try:
            spec = pod_to_jobspec(data, self.config.translation)
            runtime = self.runtime_for(spec)
            paths = self.paths(spec)
            job_name = self.config.job_name_prefix + spec.uid
            submission = self.backend.prepare(spec, paths, runtime, self.options, job_name)
            if spec.staging:
                refusal = (
                    self.staging.stager.check(spec.staging)
                    if self.staging
                    else "this site does not stage data (its config has no `staging` section)"
                )
                if refusal:
                    raise PodRejected(refusal, field="metadata.annotations[datalake.interlink/*]")
        except PodRejected:
            CREATES.labels("rejected").inc()
            raise
        async with self.lock(spec.uid):
            existing = self.pods.get(spec.uid)
            if existing is not None:
                self.check_owner(existing, principal)
                CREATES.labels("repeated").inc()
                return CreateResult(existing.uid, existing.job_id, created=False)
            if spec.staging and principal.token and self.staging is not None:
                await self.staging.enroll(spec.uid, principal.token, spec.staging)
            try:
                await self.files.materialize(paths, spec, submission.script, principal.account, submission.files)
            except (OSError, workdir.WorkdirError, TransportError) as exc:
                await self._remove_quietly(paths)
                if self.staging is not None:
                    self.staging.forget(spec.uid)
                CREATES.labels("workdir_error").inc()
                raise Unavailable(f"cannot write the pod's working directory: {exc}") from exc
            for warning in submission.warnings:
                log.info("pod %s/%s: %s", spec.namespace, spec.name, warning)
            record = PodRecord(
                uid=spec.uid,
                namespace=spec.namespace,
                name=spec.name,
                owner=principal.key,
                actor=principal.actor,
                account=principal.account or "",
                pod_dir=paths.pod_dir,
                job_name=job_name,
                stage=STAGING_IN if spec.staging.inputs else ACCEPTED,
                summary={**self.summary(spec, runtime, submission.warnings), "submit_options": submission.options},
            )
            if record.stage == STAGING_IN:
                waiting = status.waiting("StagingIn", "resolving inputs")
            else:
                waiting = status.waiting("ContainerCreating", f"submitting to {self.config.site_name}")
            record.status = self._uniform_status(record, waiting)
            record, _ = await self.store.insert(record)
            self.pods[record.uid] = record
            self.log_state(record)
            self.feed.touch(record.uid, record.owner, record.actor)
            if record.stage == STAGING_IN:
                assert self.staging is not None
                self.staging.start(record)
            else:
                submitted = self.enqueue(record.uid)
        CREATES.labels("created").inc()
        if record.stage == ACCEPTED:
            # Small bursts get their job id in the answer; big ones are not held up by the rate limit.
            try:
                await asyncio.wait_for(asyncio.shield(submitted), self.config.create_wait_seconds)
            except TimeoutError:
                pass
            record = self.pods.get(record.uid, record)
        return CreateResult(record.uid, record.job_id, created=True)

    # ------------------------------------------------------------------ submission pipeline

    def enqueue(self, uid: str) -> asyncio.Future[None]:
        """Queue a never-submitted pod (stage ACCEPTED); the future resolves once it left that stage."""
        if not self._submitters:  # in a context of their own, not the first pod's trace
            self._submitters = [
                asyncio.create_task(self._submitter(), name=f"submitter-{i}", context=contextvars.Context())
                for i in range(self.config.max_concurrent_submits)
            ]
        future = self._submitted.get(uid)
        if future is None:
            future = self._submitted[uid] = asyncio.get_running_loop().create_future()
            self._traces[uid] = tracing.remember()
            self._queue.put_nowait(uid)
        return future

    async def _submitter(self) -> None:
        while True:
            uid = await self._queue.get()
            try:
                with tracing.span("submit", {tracing.POD_UID: uid}, parent=self._traces.pop(uid, None)):
                    await self._submit_queued(uid)
            except PollError as exc:  # the reconciler retries it
                log.warning("pod %s: submission deferred: %s", uid, exc)
            except Exception:  # a submitter must outlive any one pod
                log.exception("pod %s: submission failed unexpectedly", uid)
            finally:
                future = self._submitted.pop(uid, None)
                if future is not None and not future.done():
                    future.set_result(None)

    async def _submit_queued(self, uid: str) -> None:
        async with self.lock(uid):
            record = self.pods.get(uid)
            if record is None or record.stage != ACCEPTED or record.submit_attempts:
                return  # deleted while queued, or already in the reconciler's hands
            record = await self.save(uid, stage=SUBMITTING)
            await self._submit(record)

    async def stop(self) -> None:
        for task in self._submitters:
            task.cancel()
        await asyncio.gather(*self._submitters, return_exceptions=True)

    def containers(self, record: PodRecord) -> list[status.ContainerInfo]:
        return [
            status.ContainerInfo(c["name"], c["image"], c["init"], c["restart_policy"])
            for c in record.summary["containers"]
        ]

    def _uniform_status(self, record: PodRecord, state: dict[str, Any]) -> dict[str, Any]:
        return status.uniform_statuses(self.containers(record), state)

    async def _submit(self, record: PodRecord) -> PodRecord:
        """Run sbatch for a pod whose SUBMITTING stage is already committed."""
        paths = self.paths(record)
        async with self._submit_slots:
            try:
                job_id = await self.backend.submit(
                    paths, record.job_name, record.account or None, record.summary.get("submit_options")
                )
            except SubmitError as exc:
                return await self._submit_failed(record, exc)
        faults.point("after-submit")
        pending = status.waiting("Pending", f"{self.backend.display_name} job {job_id} submitted")
        return await self.save(
            record.uid,
            stage=SUBMITTED,
            job_id=job_id,
            submitted_at=time.time(),
            message="",
            status=self._uniform_status(record, pending),
        )

    async def _submit_failed(self, record: PodRecord, exc: SubmitError) -> PodRecord:
        if exc.permanent:
            log.warning("pod %s/%s: the scheduler refused the job: %s", record.namespace, record.name, exc.message)
            refused = status.terminated(
                1, "SchedulerRejected", f"{self.backend.display_name} refused the job: {exc.message}"
            )
            return await self.save(
                record.uid,
                stage=FINISHED,
                phase=status.FAILED,
                message=exc.message,
                finished_at=time.time(),
                status=self._uniform_status(record, refused),
            )
        attempts = record.submit_attempts + 1
        delay = submit_backoff(attempts)
        log.warning(
            "pod %s/%s: submission failed (retry in %.0fs): %s", record.namespace, record.name, delay, exc.message
        )
        retrying = status.waiting("SubmitRetrying", f"{exc.message} (attempt {attempts}, next in {delay:.0f}s)")
        return await self.save(
            record.uid,
            stage=ACCEPTED,
            submit_attempts=attempts,
            next_attempt_at=time.time() + delay,
            message=exc.message,
            status=self._uniform_status(record, retrying),
        )

    async def resubmit(self, record: PodRecord) -> PodRecord:
        """Retry or recover a submission: adopt a job that already carries the name, else submit."""
        async with self.lock(record.uid):
            record = self.pods[record.uid]
            if record.stage not in (ACCEPTED, SUBMITTING):
                return record
            found = (await self.backend.find_by_name([record.job_name])).get(record.job_name)
            if found is not None:
                log.info("pod %s/%s: adopting job %s found by name", record.namespace, record.name, found.job_id)
                return await self.save(record.uid, stage=SUBMITTED, job_id=found.job_id, submitted_at=time.time())
            if record.stage == ACCEPTED:
                record = await self.save(record.uid, stage=SUBMITTING)
            return await self._submit(record)

    # ------------------------------------------------------------------ delete

    @staticmethod
    def answers_to(record: PodRecord, principal: Principal) -> bool:
        """The pod's owner, or the service that submitted it for them (a gateway acting for its users)."""
        return principal.key in (record.owner, record.actor)

    def check_owner(self, record: PodRecord, principal: Principal) -> None:
        if not self.answers_to(record, principal):
            raise Forbidden(f"pod {record.namespace}/{record.name} belongs to another identity")

    def check_reader(self, record: PodRecord, principal: Principal) -> None:
        """Reading (status, logs) is for the owner, its actor, and the site's admins."""
        if not principal.site_admin:
            self.check_owner(record, principal)

    def owned(self, principal: Principal) -> list[PodRecord]:
        return [r for r in self.pods.values() if self.answers_to(r, principal)]

    def readable(self, principal: Principal) -> list[PodRecord]:
        """The pods a listing shows: a site admin's is every pod."""
        return list(self.pods.values()) if principal.site_admin else self.owned(principal)

    async def delete(self, uid: str, principal: Principal = LOCAL) -> str:
        """Idempotent. Returns a short description of what happened."""
        with timed("delete"), tracing.span("sidecar delete", {tracing.POD_UID: uid}):
            return await self._delete(uid, principal)

    async def _delete(self, uid: str, principal: Principal) -> str:
        DELETES.inc()
        async with self.lock(uid):
            record = self.pods.get(uid)
            if record is None:
                return "not found"
            self.check_owner(record, principal)
            if record.stage in (DELETING, DELETED):
                return "already deleted"
            now = time.time()
            if record.stage == FINISHED:
                await self.save(uid, stage=DELETED, delete_requested_at=now)
                return "finished before deletion"
            if record.stage in (STAGING_IN, STAGING_OUT):
                if self.staging is not None:
                    self.staging.cancel(uid)  # stops its transfers
                await self.save(
                    uid,
                    stage=DELETED,
                    delete_requested_at=now,
                    finished_at=now,
                    message=f"deleted while {record.stage.replace('-', ' ')}",
                )
                return "staging stopped"
            if self.staging is not None:
                self.staging.forget(uid)  # it will not stage out
            if record.stage == ACCEPTED and not record.submit_attempts:
                # Still queued: sbatch never ran for it, there is nothing to cancel.
                await self.save(
                    uid, stage=DELETED, delete_requested_at=now, finished_at=now, message="deleted before submission"
                )
                return "deleted before submission"
            if record.stage in (ACCEPTED, SUBMITTING) or not record.job_id:
                # A transient failure may have left a job after all: the reconciler looks
                # it up by name and cancels it before calling the pod deleted.
                await self.save(uid, stage=DELETING, delete_requested_at=now, hard_cancel_at=now)
                return "deletion pending"
            job = self.jobs.get(uid)
            grace = float(record.summary.get("grace", 30))
            if job is not None and job.state == RUNNING and isinstance(self.backend, Signals):
                try:
                    await self.backend.signal(record.job_id, "USR1", record.account or None)
                    hard = now + grace + 5
                except PollError as exc:
                    log.warning("pod %s: graceful stop failed, cancelling: %s", uid, exc)
                    hard = now
            else:
                hard = now
            await self.save(uid, stage=DELETING, delete_requested_at=now, hard_cancel_at=hard)
            if hard <= now:
                try:
                    await self.backend.cancel([record.job_id], record.account or None)
                except PollError as exc:
                    log.warning("pod %s: cancel failed, the reconciler retries: %s", uid, exc)
            return "deleting"

    # ------------------------------------------------------------------ status

    def pod_status(self, record: PodRecord) -> dict[str, Any]:
        return pod_status_json(
            name=record.name,
            uid=record.uid,
            namespace=record.namespace,
            job_id=record.job_id,
            containers=record.status.get("containers", []),
            init_containers=record.status.get("initContainers", []),
        )

    def statuses(self, uids: list[str], principal: Principal = LOCAL) -> list[dict[str, Any]]:
        """Cached statuses of the pods we know; unknown UIDs are left out (as interLink expects)."""
        with timed("status"):
            return self._statuses(uids, principal)

    def _statuses(self, uids: list[str], principal: Principal) -> list[dict[str, Any]]:
        records = [self.pods[uid] for uid in uids if uid in self.pods]
        for record in records:
            self.check_reader(record, principal)
        return [self.pod_status(record) for record in records]

    async def capacity(self) -> Capacity:
        now = time.monotonic()
        if self._capacity and now - self._capacity[0] < 10:
            return self._capacity[1]
        if not isinstance(self.backend, ReportsCapacity):
            raise Unavailable(f"{self.backend.display_name} does not report its capacity")
        try:
            capacity = await self.backend.capacity()
        except PollError as exc:
            raise Unavailable(str(exc)) from exc
        self._capacity = (now, capacity)
        return capacity

    async def ping(self) -> PingResponse:
        # Without a capacity report the Virtual Kubelet keeps the node's configured capacity.
        capacity = await self.capacity() if isinstance(self.backend, ReportsCapacity) else None
        active = sum(1 for r in self.pods.values() if r.stage not in TERMINAL_STAGES)
        accelerators = None
        if capacity is not None and capacity.gpus_total:
            accelerators = [AcceleratorResponse(resourceType=self.config.gpu_resource, available=str(capacity.gpus))]
        return PingResponse(
            status="ok",
            resources=ResourcesResponse(
                cpu=str(capacity.cpus) if capacity else None,
                memory=f"{capacity.memory_mib}Mi" if capacity else None,
                pods=str(max(0, self.config.max_pods - active)),
                accelerators=accelerators,
            ),
            taints=[TaintResponse(key=t.key, value=t.value or None, effect=t.effect) for t in self.config.taints]
            or None,
        )

    # ------------------------------------------------------------------ logs

    def _log_target(self, request: LogStruct, principal: Principal) -> tuple[PodRecord, dict[str, Any]]:
        record = self.pods.get(request.PodUID)
        if record is None:
            raise NotFound(f"pod {request.PodUID} is not known to this site")
        self.check_reader(record, principal)
        containers = record.summary["containers"]
        name = request.ContainerName
        if not name:
            apps = [c for c in containers if not c["init"]]
            if len(apps) != 1:
                names = ", ".join(c["name"] for c in containers)
                raise BadRequest(f"a container name must be specified for pod {record.name}, choose one of: [{names}]")
            name = apps[0]["name"]
        matches = [c for c in containers if c["name"] == name]
        if not matches:
            names = ", ".join(c["name"] for c in containers)
            raise BadRequest(f"container {name} is not valid for pod {record.name}, choose one of: [{names}]")
        return record, matches[0]

    async def _remove_quietly(self, paths: PodPaths) -> None:
        try:
            await self.files.remove(paths)
        except (OSError, workdir.WorkdirError, TransportError) as exc:
            log.warning("cannot remove %s: %s", paths.pod_dir, exc)

    async def _container_finished(self, uid: str, container: dict[str, Any]) -> bool:
        record = self.pods.get(uid)
        if record is None or record.stage in TERMINAL_STAGES:
            return True
        if record.stage != SUBMITTED and record.stage != DELETING:
            return False
        files = await self.files.read_container(self.paths(record), container["name"])
        if files.skipped:
            return True
        if files.exit_code is None:
            return False
        policy = container["restart_policy"]
        return policy == "Never" or (policy == "OnFailure" and files.exit_code == 0)

    def logs(self, request: LogStruct, principal: Principal = LOCAL) -> AsyncIterator[bytes]:
        record, container = self._log_target(request, principal)
        name = container["name"]
        path = Path(self.paths(record).container_dir(name)) / ("log.previous" if request.Opts.Previous else "log")
        return logs.stream(
            self.files,
            str(path),
            request.Opts,
            lambda: self._container_finished(record.uid, container),
            now=datetime.now(UTC),
        )
