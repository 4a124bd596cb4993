"""Which pods changed, in order: the source of pushed status (gRPC WatchStatus).

Every change of a pod record gets the next revision; a watcher remembers the last
revision it saw and resumes from it after a reconnect, missing nothing. Revisions
live in memory and restart with the process, so each feed has an *epoch*: a watcher
from another epoch (the sidecar restarted) is sent every pod again, never a gap.

A removed pod is remembered (a tombstone) so that watchers learn of its removal. The
tombstones are bounded: past `max_tombstones` they are all forgotten and the feed starts
a new epoch, so every watcher is sent every live pod again and drops those it does not
hear of (a history with a hole in it is no history).
"""

from __future__ import annotations

import asyncio
import uuid

MAX_TOMBSTONES = 10_000


def new_epoch() -> str:
    return uuid.uuid4().hex[:16]


class ChangeFeed:
    def __init__(self, max_tombstones: int = MAX_TOMBSTONES) -> None:
        self.epoch = new_epoch()
        self.revision = 0
        self.max_tombstones = max_tombstones
        self._latest: dict[str, tuple[int, tuple[str, str]]] = {}  # uid -> (revision, (owner, actor))
        self._tombstones: dict[str, None] = {}  # removed UIDs (insertion-ordered)
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        """The UIDs remembered: live pods and tombstones."""
        return len(self._latest)

    def touch(self, uid: str, owner: str, actor: str = "", removed: bool = False) -> None:
        """A pod changed (or, with `removed`, is gone): wake the watchers."""
        self.revision += 1
        self._latest[uid] = (self.revision, (owner, actor))
        if removed:
            self._tombstones[uid] = None
            if len(self._tombstones) > self.max_tombstones:
                self._compact()
        else:
            self._tombstones.pop(uid, None)
        self._changed.set()
        self._changed = asyncio.Event()

    def _compact(self) -> None:
        for uid in self._tombstones:
            del self._latest[uid]
        self._tombstones.clear()
        self.epoch = new_epoch()

    def since(self, revision: int, key: str) -> list[tuple[int, str]]:
        """(revision, uid) of the pods `key` owns or submitted for others, changed after `revision`, oldest first."""
        return sorted((rev, uid) for uid, (rev, who) in self._latest.items() if rev > revision and key in who)

    async def wait(self, revision: int, timeout: float) -> bool:
        """Until something changed after `revision`; False on timeout."""
        if self.revision > revision:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return True
