"""The site service core: create, delete, status, logs and ping, whatever the protocol.

The REST plugin API and the gRPC API are thin adapters over this class. It composes the
pod book (records, locks, change feed), the submission pipeline and the staging phases;
the status cycle (`reconciler.Reconciler`) is given the same collaborators. Creating a
pod: translate it (`interlink_provider.pods`), let the backend render its job, write the
pod's directory through the site-files seam, record it, and queue its submission.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from interlink_provider.images.cache import ImageCache
from interlink_provider.pods.annotations import RUNTIME
from interlink_provider.pods.annotations import field as annotation_field
from interlink_provider.pods.jobspec import JobSpec
from interlink_provider.pods.k8s import Pod
from interlink_provider.pods.translate import pod_to_jobspec
from interlink_provider.pods.validate import PodRejected
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
from sidecars.core.domain import claims, status
from sidecars.core.domain.accounts import JobAccounts
from sidecars.core.domain.book import PodBook
from sidecars.core.domain.errors import BadRequest, Conflict, Exhausted, Forbidden, NotFound, Unavailable
from sidecars.core.domain.images import ImagePulls, pull_secrets
from sidecars.core.domain.principal import LOCAL, Principal
from sidecars.core.domain.records import ContainerInfo, JsonObject, PodRecord, PodSummary, Stage
from sidecars.core.domain.room import Room
from sidecars.core.domain.settings import ServiceSettings
from sidecars.core.domain.staging import StagingPhases
from sidecars.core.domain.store import Store
from sidecars.core.domain.streams import StreamQuota
from sidecars.core.domain.submission import Submissions
from sidecars.core.kits import logs
from sidecars.core.kits.backend import (
    RUNNING,
    Backend,
    Capacity,
    Gangs,
    PollError,
    ReportsCapacity,
    Signals,
    Submission,
)
from sidecars.core.kits.changes import ChangeFeed
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.sitefs import LocalFiles, SiteFiles
from sidecars.core.kits.transport import TransportError, current_user
from sidecars.core.kits.workdir import DirectoryPlan, DirectoryTaken, WorkdirError, plan_directory

log = logging.getLogger(__name__)

CAPACITY_SECONDS = 10  # the scheduler's free resources are asked at most this often


@dataclass(frozen=True)
class Prepared:
    """A new pod, translated and rendered, before anything is written."""

    spec: JobSpec
    runtime: Runtime
    paths: PodPaths
    job_name: str
    submission: Submission
    plan: DirectoryPlan
    pull_credentials: list[dict[str, dict[str, str]]] = field(default_factory=list)  # never stored in a record


@dataclass(frozen=True)
class CreateResult:
    uid: str
    job_id: str
    created: bool


def summary_of(spec: JobSpec, runtime: Runtime, submission: Submission) -> PodSummary:
    """What the store keeps about a pod: names and images, never env values or secrets."""
    return PodSummary(
        containers=tuple(
            ContainerInfo(c.name, c.image, c.is_init, c.restart_policy, c.pull_policy) for c in spec.all_containers()
        ),
        sensitive_volumes=tuple(v.name for v in spec.volumes if v.sensitive),
        grace=spec.grace_seconds,
        runtime=runtime.name,
        flavor=spec.flavor,
        warnings=tuple(submission.warnings),
        staging=spec.staging if spec.staging else None,
        submit_options=submission.options,
        gang=spec.gang,
    )


class SiteService:
    def __init__(
        self,
        config: ServiceSettings,
        backend: Backend,
        store: Store,
        stager: Stager | None = None,
        files: SiteFiles | None = None,
        accounts: JobAccounts | None = None,
        images: ImageCache | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.files = files or LocalFiles(config.pods_root)  # where pod directories live: here, or over SSH
        # Which accounts jobs may run as (the daemon always gives one; without it: any).
        self.accounts = accounts
        self.book = PodBook(store, config.pods_root, config.site_name)
        self.submissions = Submissions(self.book, backend, config.max_concurrent_submits, config.job_name_prefix)
        self.staging = StagingPhases(self.book, self.submissions, stager, self.files) if stager else None
        limit = config.images.size_limit_bytes if config.images else None
        secrets_dir = Path(config.state_dir) / "pull-secrets"
        self.images = ImagePulls(self.book, images, self._pulled, secrets_dir, limit) if images else None
        self.options = config.render_options()
        self.room = Room(self.book, config.max_pods, config.max_pods_per_identity)
        self.claims = claims.Claims(self.book, self.files, backend.display_name, config.translation)
        self.streams = StreamQuota(config.max_streams_per_identity)
        self._capacity: tuple[float, Capacity] | None = None

    async def load(self) -> None:
        await self.book.load()
        if self.images is not None:
            self.images.keep_only({r.uid for r in self.book.all() if not r.stage.terminal})
        for record in self.book.in_stage(Stage.PULLING):  # interrupted pulls start again
            if self.images is not None:
                self.images.start(record)
            else:
                log.error("pod %s waits for its images but this site has no image cache any more", record.uid)

    async def stop(self) -> None:
        await self.submissions.stop()
        if self.images is not None:
            await self.images.stop()

    # ------------------------------------------------------------------ what the adapters read

    @property
    def feed(self) -> ChangeFeed:
        return self.book.feed

    @property
    def poll_error(self) -> str:
        """Why the last status poll failed ("" when the scheduler answered)."""
        return self.book.scheduler.poll_error

    @property
    def scheduler_name(self) -> str:
        return self.backend.display_name

    def record(self, uid: str) -> PodRecord | None:
        return self.book.get(uid)

    def staging_progress(self, uid: str) -> str:
        return self.staging.progress(uid) if self.staging else ""

    def readable(self, principal: Principal) -> list[PodRecord]:
        """The pods a listing shows: the caller's, or every pod for a site admin."""
        return [r for r in self.book.all() if principal.may_read(r)]

    # ------------------------------------------------------------------ create

    def runtime_for(self, spec: JobSpec) -> Runtime:
        wanted = spec.pod_options.runtime or self.config.runtime.default
        allowed = {self.config.runtime.default, *self.config.runtime.allowed}
        if wanted not in allowed:
            raise PodRejected(
                f"runtime {wanted!r} is not offered here (choose one of {sorted(allowed)})",
                field=annotation_field(RUNTIME),
            )
        return make_runtime(wanted, self.config.runtime)

    async def create(self, data: RetrievedPodData, principal: Principal = LOCAL) -> CreateResult:
        """Idempotent by pod UID. Raises PodRejected for pods this site cannot run."""
        with timed("create"), tracing.span("sidecar create", {tracing.POD_UID: data.pod.metadata.uid or ""}):
            return await self._create(data, principal)

    def _prepare(self, data: RetrievedPodData, principal: Principal) -> Prepared:
        """Everything about a new pod that needs no I/O: every refusal happens here."""
        try:
            spec = pod_to_jobspec(data, self.config.translation)
            runtime = self.runtime_for(spec)
            account = principal.account or current_user()
            paths = PodPaths.for_pod(self.config.pods_root, spec.namespace, spec.uid, account)
            job_name = self.config.job_name_prefix + spec.uid
            submission = self.backend.prepare(spec, paths, runtime, self.options, job_name)
            if spec.gang is not None and not isinstance(self.backend, Gangs):
                raise PodRejected(f"gang {spec.gang.name}: {self.backend.display_name} at this site does not run gangs")
            plan = plan_directory(spec, submission.script, submission.files)
            if spec.staging:
                self._check_staging(spec)
        except PodRejected:
            CREATES.labels("rejected").inc()
            raise
        credentials = pull_secrets(data) if runtime.uses_image_cache else []
        return Prepared(spec, runtime, paths, job_name, submission, plan, credentials)

    def _check_staging(self, spec: JobSpec) -> None:
        if self.staging is None:
            refusal: str | None = "this site does not stage data (its config has no `staging` section)"
        else:
            refusal = self.staging.check(spec.staging)
        if refusal:
            raise PodRejected(refusal, field="metadata.annotations[datalake.interlink/*]")

    async def _create(self, data: RetrievedPodData, principal: Principal) -> CreateResult:
        new = self._prepare(data, principal)
        spec = new.spec
        async with self.book.lock(spec.uid):
            existing = self.book.get(spec.uid)
            if existing is not None and claims.claimable(existing, principal, data.pod):
                existing = await self.claims.take(existing, principal, data.pod)
            if existing is not None:
                principal.check_owner(existing)
                CREATES.labels("repeated").inc()
                return CreateResult(existing.uid, existing.job_id, created=False)
            try:
                with self.room.place(principal.key):
                    record = await self._admit(new, principal)
            except Exhausted:
                CREATES.labels("exhausted").inc()
                raise
            submitted = self._start(record)
        CREATES.labels("created").inc()
        if submitted is not None:
            # Small bursts get their job id in the answer; big ones are not held up by the rate limit.
            try:
                await asyncio.wait_for(asyncio.shield(submitted), self.config.create_wait_seconds)
            except TimeoutError:
                pass
            record = self.book.get(record.uid) or record
        return CreateResult(record.uid, record.job_id, created=True)

    async def _admit(self, new: Prepared, principal: Principal) -> PodRecord:
        """The account checked, staging enrolled, the directory written: the pod's record."""
        spec = new.spec
        if self.accounts is not None:
            try:
                await self.accounts.check(principal.account)
            except Forbidden:
                CREATES.labels("forbidden").inc()
                raise
        if spec.staging and principal.token and self.staging is not None:
            await self.staging.enroll(spec.uid, principal.token, spec.staging)
        await self._write_directory(new, principal)
        if self.images is not None:
            self.images.remember(spec.uid, new.pull_credentials)
        for warning in new.submission.warnings:
            log.info("pod %s/%s: %s", spec.namespace, spec.name, warning)
        return await self.book.insert(self._new_record(new, principal))

    async def _write_directory(self, new: Prepared, principal: Principal) -> None:
        files = self.files.for_account(principal.account or "")
        try:
            await files.materialize(new.paths, new.plan)
        except DirectoryTaken as exc:  # never touch a directory that is not this pod's
            self._forget_staging(new.spec.uid)
            CREATES.labels("workdir_error").inc()
            raise Conflict(f"cannot create the pod's working directory: {exc}") from exc
        except (OSError, WorkdirError, TransportError) as exc:
            await self._remove_quietly(files, new.paths)
            self._forget_staging(new.spec.uid)
            CREATES.labels("workdir_error").inc()
            raise Unavailable(f"cannot write the pod's working directory: {exc}") from exc

    def _forget_staging(self, uid: str) -> None:
        if self.staging is not None:
            self.staging.forget(uid)

    def _new_record(self, new: Prepared, principal: Principal) -> PodRecord:
        spec = new.spec
        summary = summary_of(spec, new.runtime, new.submission)
        if new.runtime.uses_image_cache:
            stage, waiting = Stage.PULLING, status.waiting("PullingImage", "waiting to pull its images")
        else:
            stage, waiting = self._stage_after_images(bool(spec.staging.inputs))
        return PodRecord(
            uid=spec.uid,
            namespace=spec.namespace,
            name=spec.name,
            owner=principal.key,
            actor=principal.actor,
            account=principal.account or "",
            pod_dir=new.paths.pod_dir,
            job_name=new.job_name,
            stage=stage,
            summary=summary,
            status=status.uniform_statuses(summary.containers, waiting),
        )

    def _start(self, record: PodRecord) -> asyncio.Future[None] | None:
        """Pull its images, stage its inputs, or queue its submission (a future: resolved once it
        left the queue)."""
        if record.stage == Stage.PULLING:
            if self.images is None:  # the site's config lost its `images` section
                raise Unavailable("this site has no image cache any more: the pod's images cannot be pulled")
            self.images.start(record)
            return None
        if record.stage == Stage.STAGING_IN:
            assert self.staging is not None
            self.staging.start(record)
            return None
        return self.submissions.enqueue(record.uid)

    def _stage_after_images(self, has_inputs: bool) -> tuple[Stage, JsonObject]:
        """Where a pod goes once its images are ready (at once without an image runtime), and what
        its containers show there: stage-in when it declares inputs, else the submission queue."""
        if has_inputs:
            return Stage.STAGING_IN, status.waiting("StagingIn", "resolving inputs")
        return Stage.ACCEPTED, status.waiting("ContainerCreating", f"submitting to {self.config.site_name}")

    async def _pulled(self, record: PodRecord) -> None:
        """Its images are pinned: on to stage-in or the submission queue (under the pod's lock)."""
        stage, waiting = self._stage_after_images(bool(record.staging.inputs))
        statuses = status.uniform_statuses(record.summary.containers, waiting)
        self._start(await self.book.save(record.uid, stage=stage, status=statuses))

    async def _remove_quietly(self, files: SiteFiles, paths: PodPaths) -> None:
        try:
            await files.remove(paths)
        except (OSError, WorkdirError, TransportError) as exc:
            log.warning("cannot remove %s: %s", paths.pod_dir, exc)

    # ------------------------------------------------------------------ delete

    async def delete(self, uid: str, principal: Principal = LOCAL) -> str:
        """Idempotent. Returns a short description of what happened."""
        with timed("delete"), tracing.span("sidecar delete", {tracing.POD_UID: uid}):
            return await self._delete(uid, principal)

    async def _delete(self, uid: str, principal: Principal) -> str:
        DELETES.inc()
        async with self.book.lock(uid):
            record = self.book.get(uid)
            if record is None:
                return "not found"
            if claims.claimable(record, principal):  # a rebuilt record: its account's caller may stop it
                record = await self.claims.take(record, principal)
            principal.check_owner(record)
            now = time.time()
            if record.stage in (Stage.DELETING, Stage.DELETED):
                return "already deleted"
            if record.stage == Stage.FINISHED:
                await self.book.save(uid, stage=Stage.DELETED, delete_requested_at=now)
                return "finished before deletion"
            if record.stage == Stage.PULLING:
                if self.images is not None:
                    self.images.release(uid)
                self._forget_staging(uid)
                await self.book.save(
                    uid, stage=Stage.DELETED, delete_requested_at=now, finished_at=now, message="deleted while pulling"
                )
                return "pull stopped"
            if record.stage.staging:
                if self.staging is not None:
                    self.staging.cancel(uid)  # stops its transfers
                message = f"deleted while {record.stage.words}"
                await self.book.save(
                    uid, stage=Stage.DELETED, delete_requested_at=now, finished_at=now, message=message
                )
                return "staging stopped"
            if self.staging is not None:
                self.staging.forget(uid)  # it will not stage out
            return await self._delete_job(record, now)

    async def _delete_job(self, record: PodRecord, now: float) -> str:
        uid = record.uid
        if record.stage == Stage.ACCEPTED and not record.submit_attempts:
            # Still queued: the submit command never ran for it, there is nothing to cancel.
            await self.book.save(
                uid, stage=Stage.DELETED, delete_requested_at=now, finished_at=now, message="deleted before submission"
            )
            return "deleted before submission"
        if record.stage in (Stage.ACCEPTED, Stage.SUBMITTING) or not record.job_id:
            # A transient failure may have left a job after all: the status cycle looks it up by
            # name and cancels it before calling the pod deleted.
            await self.book.save(uid, stage=Stage.DELETING, delete_requested_at=now, hard_cancel_at=now)
            return "deletion pending"
        hard = await self._stop_gracefully(record, now)
        await self.book.save(uid, stage=Stage.DELETING, delete_requested_at=now, hard_cancel_at=hard)
        if hard <= now:
            try:
                await self.backend.cancel([record.job_id], record.account or None)
            except PollError as exc:
                log.warning("pod %s: cancel failed, the status cycle retries: %s", uid, exc)
        return "deleting"

    async def _stop_gracefully(self, record: PodRecord, now: float) -> float:
        """Ask a running job to stop (preStop hooks, grace period); when to cancel it for good."""
        job = self.book.scheduler.jobs.get(record.uid)
        if job is None or job.state != RUNNING or not isinstance(self.backend, Signals):
            return now  # without the capability: cancelled at once
        try:
            await self.backend.signal(record.job_id, "USR1", record.account or None)
        except PollError as exc:
            log.warning("pod %s: graceful stop failed, cancelling: %s", record.uid, exc)
            return now
        return now + record.summary.grace + 5

    # ------------------------------------------------------------------ status

    def pod_status(self, record: PodRecord) -> dict[str, Any]:
        return pod_status_json(
            name=record.name,
            uid=record.uid,
            namespace=record.namespace,
            job_id=record.job_id,
            containers=list(record.status.apps),
            init_containers=list(record.status.init),
        )

    async def claim_rebuilt(self, pods: list[Pod], principal: Principal) -> None:
        """Rebuilt records (`site rebuild-state`) of these pods go to the caller (see claims)."""
        for pod in pods:
            await self.claims.claim(pod.metadata.uid or "", principal, pod)

    async def claim_rebuilt_uids(self, uids: list[str], principal: Principal) -> None:
        """The same for callers that name pods by UID only (gRPC): owner only, no containers."""
        for uid in uids:
            await self.claims.claim(uid, principal)

    def statuses(self, uids: list[str], principal: Principal = LOCAL) -> list[dict[str, Any]]:
        """Cached statuses of the pods we know; unknown UIDs are left out (as interLink expects)."""
        with timed("status"):
            records = [r for r in map(self.book.get, uids) if r is not None]
            for record in records:
                principal.check_reader(record)
            return [self.pod_status(record) for record in records]

    async def capacity(self) -> Capacity:
        now = time.monotonic()
        if self._capacity and now - self._capacity[0] < CAPACITY_SECONDS:
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
        accelerators = None
        if capacity is not None and capacity.gpus_total:
            accelerators = [AcceleratorResponse(resourceType=self.config.gpu_resource, available=str(capacity.gpus))]
        taints = [TaintResponse(key=t.key, value=t.value or None, effect=t.effect) for t in self.config.taints]
        return PingResponse(
            status="ok",
            resources=ResourcesResponse(
                cpu=str(capacity.cpus) if capacity else None,
                memory=f"{capacity.memory_mib}Mi" if capacity else None,
                pods=str(max(0, self.config.max_pods - self.book.active())),
                accelerators=accelerators,
            ),
            taints=taints or None,
        )

    # ------------------------------------------------------------------ logs

    def _log_target(self, request: LogStruct, principal: Principal) -> tuple[PodRecord, ContainerInfo]:
        record = self.book.get(request.PodUID)
        if record is None:
            raise NotFound(f"pod {request.PodUID} is not known to this site")
        principal.check_reader(record)
        containers = record.summary.containers
        names = ", ".join(c.name for c in containers)
        name = request.ContainerName
        if not name:
            apps = [c for c in containers if not c.is_init]
            if len(apps) != 1:
                raise BadRequest(f"a container name must be specified for pod {record.name}, choose one of: [{names}]")
            name = apps[0].name
        container = record.summary.container(name)
        if container is None:
            raise BadRequest(f"container {name} is not valid for pod {record.name}, choose one of: [{names}]")
        return record, container

    async def _container_finished(self, uid: str, container: ContainerInfo) -> bool:
        """Following a log ends here: the container ended for good (or the pod did)."""
        record = self.book.get(uid)
        if record is None or record.stage.terminal:
            return True
        if record.stage not in (Stage.SUBMITTED, Stage.DELETING):
            return False
        files = await self.files.for_account(record.account).read_container(self.book.paths(record), container.name)
        if files.skipped:
            return True
        if files.exit_code is None:
            return False
        policy = container.restart_policy
        return policy == "Never" or (policy == "OnFailure" and files.exit_code == 0)

    def logs(self, request: LogStruct, principal: Principal = LOCAL) -> AsyncIterator[bytes]:
        record, container = self._log_target(request, principal)
        path = self.book.paths(record).log_file(container.name, previous=request.Opts.Previous)
        return logs.stream(
            self.files.for_account(record.account),
            path,
            request.Opts,
            lambda: self._container_finished(record.uid, container),
            now=datetime.now(UTC),
        )
