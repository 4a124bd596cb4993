"""Gangs at the site: every member is held until the whole gang is there, then all of them are
submitted as one job, one member per node (interlink_provider/pods/gang.py).

A gang is known by its account, namespace and name. A member that is ready to be submitted
(stage ACCEPTED: its images pulled, its inputs staged) waits there, showing `GangWaiting`,
until the gang has as many ready members as its size; the member that completes it submits
them all. The crash window is the same as a lone pod's (submission.py): every member's
SUBMITTING stage is committed, with the gang's job name, before the submit command runs, and a
member found in that stage after a restart looks the job up by that name before submitting the
gang again. The name is made from the members' UIDs, so a gang made again of new pods never
adopts the job of an earlier one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from interlink_provider.pods.gang import rank_order
from interlink_provider.telemetry.metrics import GANG_WAIT_SECONDS
from sidecars.core.domain import status
from sidecars.core.domain.book import PodBook
from sidecars.core.domain.records import PodRecord, Stage
from sidecars.core.kits import faults
from sidecars.core.kits.backend import Backend, Gangs, SubmitError
from sidecars.core.kits.keyedlocks import KeyedLocks

log = logging.getLogger(__name__)

GangKey = tuple[str, str, str]  # account, namespace, gang name
WAITING = (Stage.ACCEPTED, Stage.SUBMITTING)  # a member in these stages is ready or being submitted


def held_key(record: PodRecord) -> GangKey:
    assert record.summary.gang is not None
    return (record.account, record.namespace, record.summary.gang.name)


def gang_job_name(prefix: str, uids: list[str]) -> str:
    """The gang's job name: its members' UIDs, so a gang of new pods never takes an old job."""
    digest = hashlib.sha256(",".join(sorted(uids)).encode()).hexdigest()
    return f"{prefix}gang-{digest[:32]}"


def _rank(record: PodRecord) -> tuple[int, int, str]:
    return rank_order(record.summary.gang.index if record.summary.gang else None, record.name)


class GangSubmissions:
    def __init__(
        self,
        book: PodBook,
        backend: Backend,
        job_name_prefix: str,
        slots: contextlib.AbstractAsyncContextManager[object],
        submitted: Callable[[PodRecord, str, str], Awaitable[PodRecord]],
        failed: Callable[[PodRecord, SubmitError], Awaitable[PodRecord]],
    ) -> None:
        self.book = book
        self.backend = backend
        self.prefix = job_name_prefix
        self._slots = slots  # the submitters' semaphore: a gang takes one slot
        self._save_submitted = submitted  # a member's job id committed, as a lone pod's
        self._failed = failed  # a refused submission, as for a lone pod
        self._locks = KeyedLocks()

    async def arrived(self, record: PodRecord) -> None:
        """A member is ready (or its submission is to be recovered): submit the gang if complete."""
        key = held_key(record)
        size = record.summary.gang.size if record.summary.gang else 0
        async with self._locks.hold("\0".join(key)):
            members = self._members(key)
            if len(members) >= size:
                members = await self._submit_complete(members[:size], size)
            if members:
                await self._waiting(members, size)

    async def _submit_complete(self, members: list[PodRecord], size: int) -> list[PodRecord]:
        """Submit these members under their locks; the ones still waiting when one of them was
        deleted meanwhile (else none)."""
        async with contextlib.AsyncExitStack() as held:
            for uid in sorted(m.uid for m in members):
                await held.enter_async_context(self.book.lock(uid))
            current = [self.book.get(m.uid) for m in members]
            ready = [m for m in current if m is not None and m.stage in WAITING]
            if len(ready) < size:
                return ready
            await self._submit(sorted(ready, key=_rank))
        return []

    def _members(self, key: GangKey) -> list[PodRecord]:
        """The gang's ready members, those being submitted first (they are taken), then by rank."""
        members = [r for r in self.book.in_stage(*WAITING) if r.summary.gang is not None and held_key(r) == key]
        return sorted(members, key=lambda r: (r.stage != Stage.SUBMITTING, _rank(r)))

    async def _waiting(self, members: list[PodRecord], size: int) -> None:
        gang = members[0].summary.gang.name if members[0].summary.gang else ""
        said = status.waiting("GangWaiting", f"gang {gang}: {len(members)} of {size} members are ready")
        for member in members:
            if member.stage != Stage.ACCEPTED or member.submit_attempts:
                continue
            async with self.book.lock(member.uid):
                current = self.book.get(member.uid)
                if current is not None and current.stage == Stage.ACCEPTED:
                    await self.book.save(member.uid, status=status.uniform_statuses(current.summary.containers, said))

    async def _submit(self, members: list[PodRecord]) -> None:
        """Submit the complete gang (its members' locks held), or adopt the job it already has."""
        name = gang_job_name(self.prefix, [m.uid for m in members])
        if any(m.stage == Stage.SUBMITTING for m in members):
            found = (await self.backend.find_by_name([name])).get(name)
            if found is not None:
                log.info("gang of %s: adopting job %s found by name", members[0].name, found.job_id)
                await self._submitted(members, found.job_id)
                return
        members = [await self.book.save(m.uid, stage=Stage.SUBMITTING, job_name=name) for m in members]
        assert isinstance(self.backend, Gangs)
        async with self._slots:
            try:
                job_id = await self.backend.submit_gang(
                    [self.book.paths(m) for m in members], name, members[0].account or None
                )
            except SubmitError as exc:
                for member in members:
                    await self._failed(member, exc)
                return
        faults.point("after-submit")
        GANG_WAIT_SECONDS.observe(time.time() - min(m.created_at for m in members))
        await self._submitted(members, job_id)

    async def _submitted(self, members: list[PodRecord], job_id: str) -> None:
        for member in members:
            await self._save_submitted(member, job_id, f" (gang of {len(members)})")
