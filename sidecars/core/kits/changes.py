"""Which pods changed, in order: the source of pushed status (gRPC WatchStatus).

Every change of a pod record gets the next revision; a watcher remembers the last
revision it saw and resumes from it after a reconnect, missing nothing. Revisions
live in memory and restart with the process, so each feed has an *epoch*: a watcher
from another epoch (the sidecar restarted) is sent every pod again, never a gap.
"""

from __future__ import annotations

import asyncio
import uuid


class ChangeFeed:
    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex[:16]
        self.revision = 0
        self._latest: dict[str, tuple[int, tuple[str, str]]] = {}  # uid -> (revision, (owner, actor))
        self._changed = asyncio.Event()

    def touch(self, uid: str, owner: str, actor: str = "") -> None:
        """A pod changed (or was removed): wake the watchers."""
        self.revision += 1
        self._latest[uid] = (self.revision, (owner, actor))
        self._changed.set()
        self._changed = asyncio.Event()

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
