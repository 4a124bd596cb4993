"""Rebuilt records claimed by their owners' callers (records from `site rebuild-state`, see
sidecars.core.domain.rebuild).

A rebuilt record belongs to no one: it knows the job's account and the pod's namespace, not who
created the pod. The first caller whose identity maps to that account and who names the pod (a
create, a status call, a delete) takes it: the account is what the kernel and the scheduler
already let that caller act as, so taking the record gives it nothing it could not do. A caller
that sends the whole pod (create, REST status) also brings its name and containers, with which
the statuses can be computed again; one that sends only the UID (gRPC, a delete) takes the
owner alone, and the containers come with the pod's next create or REST status call."""

from __future__ import annotations

import logging

from interlink_provider.pods.k8s import Pod
from interlink_provider.pods.policy import TranslationPolicy
from sidecars.core.domain import rebuild, status
from sidecars.core.domain.book import PodBook
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.records import PodRecord, PodStatuses, PodSummary
from sidecars.core.kits.sitefs import SiteFiles
from sidecars.core.kits.transport import TransportError

log = logging.getLogger(__name__)


def claimable(record: PodRecord, principal: Principal, pod: Pod | None = None) -> bool:
    """A rebuilt record, for a caller of its job's account (and of its namespace, when it sends the
    pod); never for a site admin, who reads every pod and acts on none."""
    if principal.site_admin or record.owner != rebuild.REBUILT_OWNER or record.account != (principal.account or ""):
        return False
    return pod is None or pod.metadata.namespace == record.namespace


class Claims:
    def __init__(self, book: PodBook, files: SiteFiles, scheduler_name: str, policy: TranslationPolicy) -> None:
        self.book = book
        self.files = files
        self.scheduler_name = scheduler_name
        self.policy = policy  # the site's grace period rules, as at create

    async def claim(self, uid: str, principal: Principal, pod: Pod | None = None) -> None:
        """Take the record of `uid` if it is claimable by this caller; any other is left alone."""
        record = self.book.get(uid)
        if record is None or not claimable(record, principal, pod):
            return
        async with self.book.lock(uid):
            current = self.book.get(uid)
            if current is not None and claimable(current, principal, pod):
                await self.take(current, principal, pod)

    async def take(self, record: PodRecord, principal: Principal, pod: Pod | None = None) -> PodRecord:
        """The record owned by the caller, with the pod's name and containers when it sent them
        (the caller holds the pod's lock)."""
        log.info("pod %s: the rebuilt record of job %s claimed by %s", record.uid, record.job_id, principal.key)
        if pod is None:
            return await self.book.save(record.uid, owner=principal.key, actor=principal.actor)
        summary = rebuild.claimed_summary(record, pod, self.policy)
        statuses = await self._statuses(record, summary)
        return await self.book.save(
            record.uid,
            owner=principal.key,
            actor=principal.actor,
            name=pod.metadata.name or "",
            summary=summary,
            status=statuses,
            phase=status.phase_of(statuses),
        )

    async def _statuses(self, record: PodRecord, summary: PodSummary) -> PodStatuses:
        """Waiting until the next status cycle reads the pod's files; read now if its job ended
        before the claim (no cycle reads a finished pod again)."""
        reading = status.waiting("ContainerCreating", "reading the pod's files again after the state rebuild")
        if not record.stage.terminal:
            return status.uniform_statuses(summary.containers, reading)
        try:
            return await self._final_statuses(record, summary)
        except TransportError as exc:
            log.warning("pod %s: cannot read the files of its ended job: %s", record.uid, exc)
            return status.uniform_statuses(summary.containers, reading)

    async def _final_statuses(self, record: PodRecord, summary: PodSummary) -> PodStatuses:
        """The statuses of a pod whose job ended, from the runner's files and the job's end."""
        files = await self.files.for_account(record.account).read_pod(
            self.book.paths(record), [c.name for c in summary.containers]
        )
        job = self.book.scheduler.jobs.get(record.uid) or status.ended_by_runner(record.job_id, files)
        view = status.PodView(containers=summary.containers, job=job, files=files, scheduler=self.scheduler_name)
        return status.statuses_of(view)
