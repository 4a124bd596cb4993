"""The pods the site knows: records in memory over the durable store, one lock per pod, the feed
of changes, and what the scheduler said last.

Everything that changes a pod goes through `save` (or `insert`/`remove`): the store commits
first, then the in-memory record, the change feed (pushed status) and the log line of a
new stage or phase follow. Holding `lock(uid)` makes a read-decide-save sequence atomic
against other tasks acting on the same pod (create, delete, the status cycle, staging).
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from sidecars.core.domain.records import PodRecord, Stage
from sidecars.core.domain.store import Store
from sidecars.core.kits.backend import JobInfo
from sidecars.core.kits.changes import ChangeFeed
from sidecars.core.kits.keyedlocks import KeyedLocks
from sidecars.core.kits.podpaths import PodPaths

log = logging.getLogger(__name__)


@dataclass
class SchedulerView:
    """What the scheduler said last: per pod (its job), and whether it answered at all."""

    jobs: dict[str, JobInfo] = field(default_factory=dict)  # pod UID -> its job's last known state
    poll_error: str = ""  # why the last status poll failed ("" when it answered)


class PodBook:
    def __init__(self, store: Store, pods_root: str, site_name: str) -> None:
        self.store = store
        self.pods_root = pods_root
        self.site_name = site_name
        self.feed = ChangeFeed()  # every change of a record, for pushed status
        self.scheduler = SchedulerView()
        self._records: dict[str, PodRecord] = {}
        self._locks = KeyedLocks()
        self._holding: Counter[str] = Counter()  # owner -> pods that hold a place (not terminal)

    async def load(self) -> None:
        """Open the store and know every pod in it (a new feed epoch's snapshot includes them all)."""
        await self.store.open()
        for record in await self.store.all():
            self._keep(record)
            self.feed.touch(record.uid, record.owner, record.actor)

    # ------------------------------------------------------------------ reading

    def get(self, uid: str) -> PodRecord | None:
        return self._records.get(uid)

    def __len__(self) -> int:
        return len(self._records)

    def all(self) -> list[PodRecord]:
        return list(self._records.values())

    def in_stage(self, *stages: Stage) -> list[PodRecord]:
        return [r for r in self._records.values() if r.stage in stages]

    def active(self) -> int:
        """Pods that still take a place on the node (not finished or deleted)."""
        return self._holding.total()

    def holding(self, owner: str) -> int:
        """Pods of `owner` that still take a place (counted as records change: a create need
        not walk every record, finished ones kept for their retention included)."""
        return self._holding[owner]

    def _keep(self, record: PodRecord) -> None:
        """`record` replaces what the book held for its UID; the places are counted again."""
        before = self._records.get(record.uid)
        if before is not None and not before.stage.terminal:
            self._release(before.owner)
        self._records[record.uid] = record
        if not record.stage.terminal:
            self._holding[record.owner] += 1

    def _release(self, owner: str) -> None:
        self._holding[owner] -= 1
        if not self._holding[owner]:
            del self._holding[owner]

    def paths(self, record: PodRecord) -> PodPaths:
        return PodPaths(pods_root=self.pods_root, pod_dir=record.pod_dir)

    def lock(self, uid: str) -> AbstractAsyncContextManager[None]:
        """The pod's lock, for `async with` (only pods in use have one)."""
        return self._locks.hold(uid)

    def locks_in_use(self) -> int:
        return len(self._locks)

    # ------------------------------------------------------------------ changing

    async def insert(self, record: PodRecord) -> PodRecord:
        """Record a new pod (idempotent by UID: the stored record wins)."""
        record, _ = await self.store.insert(record)
        self._keep(record)
        self.log_state(record)
        self.feed.touch(record.uid, record.owner, record.actor)
        return record

    async def save(self, uid: str, **changes: Any) -> PodRecord:
        before = self._records.get(uid)
        record = await self.store.update(uid, **changes)
        assert record is not None, f"pod {uid} vanished from the store"
        self._keep(record)
        self.feed.touch(uid, record.owner, record.actor)
        if before is None or (before.stage, before.phase) != (record.stage, record.phase):
            self.log_state(record)
        return record

    async def remove(self, record: PodRecord) -> None:
        """The pod is gone from the store: watchers learn that it was removed."""
        await self.store.delete(record.uid)
        held = self._records.pop(record.uid, None)
        if held is not None and not held.stage.terminal:
            self._release(held.owner)
        self.scheduler.jobs.pop(record.uid, None)
        self.feed.touch(record.uid, record.owner, record.actor, removed=True)

    def log_state(self, record: PodRecord) -> None:
        """One line per state change, its facts as fields (never env values or secrets)."""
        reason = record.state_reason()
        log.info(
            "pod %s/%s: %s, %s%s",
            record.namespace,
            record.name,
            record.stage.value,
            record.phase,
            f" ({reason})" if reason else "",
            extra={
                "pod_uid": record.uid,
                "namespace": record.namespace,
                "pod": record.name,
                "job_id": record.job_id,
                "site": self.site_name,
                "stage": record.stage.value,
                "phase": record.phase,
                "reason": reason,
            },
        )
