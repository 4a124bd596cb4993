"""Deletions and signals arriving together share one scheduler command (scancel, condor_rm).

A pod deletion storm must cost the controller a handful of commands, not one per pod:
job ids for the same command and account gathered within a short window go out as
one command, and every caller waits for (and sees the error of) that one command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

# Runs one command: its words plus the job ids, as an account (None: the sidecar's own).
Sender = Callable[[list[str], "str | None"], Coroutine[Any, Any, None]]
# The error callers see when a batch's command was interrupted (the backend contract's PollError).
Interrupted = Callable[[str], BaseException]


class _Batch:
    """Job ids gathered for one command, and the outcome every caller waits for."""

    def __init__(self, command: str, interrupted: Interrupted) -> None:
        self.command = command
        self.interrupted = interrupted
        self.job_ids: set[str] = set()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(self, task: asyncio.Task[None]) -> None:
        error = self.interrupted(f"{self.command} was interrupted") if task.cancelled() else task.exception()
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)
            self.done.exception()  # retrieved: callers that gave up waiting cause no warning


class CommandBatches:
    def __init__(
        self, window_seconds: float, send: Sender, order: Callable[[str], Any], interrupted: Interrupted
    ) -> None:
        self.window_seconds = window_seconds
        self.send = send
        self.order = order  # job ids in the command line in this order (numeric, for readable logs)
        self.interrupted = interrupted
        self._open: dict[tuple[tuple[str, ...], str], _Batch] = {}

    async def add(self, command: tuple[str, ...], job_ids: list[str], account: str | None) -> None:
        """Wait until these jobs were handled by a command shared with any arriving meanwhile."""
        if not job_ids:
            return
        key = (command, account or "")
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(command[0], self.interrupted)
            asyncio.get_running_loop().call_later(self.window_seconds, self._flush, key)
        batch.job_ids.update(job_ids)
        await asyncio.shield(batch.done)

    def _flush(self, key: tuple[tuple[str, ...], str]) -> None:
        batch = self._open.pop(key)
        command, account = key
        task = asyncio.create_task(self.send([*command, *sorted(batch.job_ids, key=self.order)], account or None))
        task.add_done_callback(batch.settle)
