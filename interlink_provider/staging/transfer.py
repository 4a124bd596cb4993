"""Moving bytes with XRootD's CopyProcess: parallel, checksummed, cancellable, with progress.

Blocking (the xrootd bindings): call `run_copies` from a worker thread. A download is
verified against the catalog's adler32 (`checksummode=target` with that preset), so
a corrupt replica is caught even though the server recomputes its own checksum; an
upload is verified end to end (our adler32 against the server's).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .credentials import plain
from .errors import Cancelled
from .refs import FileRef

log = logging.getLogger(__name__)

# Failures worth retrying: the network or the server being busy, not the data.
_TRANSIENT = (
    "connection",
    "socket",
    "timeout",
    "timed out",
    "expired",
    "refused",
    "unreachable",
    "temporarily",
    "try again",
    "redirect limit",
)


@dataclass
class CopyJob:
    source: str
    target: str
    checksum: str | None = None  # expected adler32: verify the copy against it
    key: Any = None  # the caller's handle


@dataclass
class CopyOutcome:
    job: CopyJob
    ok: bool
    message: str = ""
    transient: bool = False


@dataclass
class Progress:
    """Bytes and files done, readable from any thread."""

    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    _bytes: dict[Any, int] = field(default_factory=dict)
    _base: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, files: int, size: int) -> None:
        with self.lock:
            self.files_total += files
            self.bytes_total += size

    def advance(self, key: Any, done: int) -> None:
        with self.lock:
            self._bytes[key] = done

    def finish(self, key: Any, size: int | None = None) -> None:
        """A file is done: count its size (default: the bytes last reported for it)."""
        with self.lock:
            seen = self._bytes.pop(key, 0)
            self._base += seen if size is None else size
            self.files_done += 1

    @property
    def bytes_done(self) -> int:
        with self.lock:
            return self._base + sum(self._bytes.values())

    def describe(self) -> str:
        done, total = human_bytes(self.bytes_done), human_bytes(self.bytes_total)
        return f"{self.files_done}/{self.files_total} files, {done}/{total}"


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def configure_client(connection_window: int = 10, connection_retry: int = 2, request_timeout: int = 300) -> None:
    """XRootD's defaults wait minutes on a dead server (retry 5 x window 120 s)."""
    from XRootD.client import env

    env.EnvPutInt("ConnectionWindow", connection_window)
    env.EnvPutInt("ConnectionRetry", connection_retry)
    env.EnvPutInt("RequestTimeout", request_timeout)


def _is_transient(status: Any) -> bool:
    if getattr(status, "ok", False):
        return False
    text = str(getattr(status, "message", "")).lower()
    if "checksum" in text or getattr(status, "errno", 0) in (3010, 3011):
        return False
    return any(word in text for word in _TRANSIENT)


def run_copies(jobs: list[CopyJob], parallel: int, progress: Progress, cancel: threading.Event) -> list[CopyOutcome]:
    """Copy every job; one outcome per job, in order. Raises Cancelled when asked to stop."""
    from XRootD import client
    from XRootD.client.utils import CopyProgressHandler

    if not jobs:
        return []

    class Handler(CopyProgressHandler):  # type: ignore[misc]  # the XRootD bindings carry no types
        def update(self, job_id: int, processed: int, total: int) -> None:
            progress.advance(jobs[job_id - 1].key, processed)

        def should_cancel(self, job_id: int) -> bool:
            return cancel.is_set()

    process = client.CopyProcess()
    process.parallel(parallel)
    for job in jobs:
        mode = "target" if job.checksum else "end2end"
        process.add_job(
            job.source,
            job.target,
            force=True,
            mkdir=True,
            posc=True,
            checksummode=mode,
            checksumtype="adler32",
            checksumpreset=job.checksum or "",
            rmBadCksum=True,
        )
    prepared = process.prepare()
    if not prepared.ok:
        return [
            CopyOutcome(job, False, f"cannot prepare the copy: {prepared.message}", _is_transient(prepared))
            for job in jobs
        ]
    _, results = process.run(Handler())
    if cancel.is_set():
        raise Cancelled()
    outcomes = []
    for job, result in zip(jobs, results, strict=False):
        status = result.get("status") if isinstance(result, dict) else None
        if status is not None and status.ok:
            outcomes.append(CopyOutcome(job, True))
        else:
            message = str(getattr(status, "message", "no result")).strip()
            outcomes.append(CopyOutcome(job, False, message, _is_transient(status)))
    outcomes += [CopyOutcome(job, False, "the copy did not run", True) for job in jobs[len(results) :]]
    return outcomes


# ---------------------------------------------------------------------- retries and fallback


@dataclass(frozen=True)
class RetryPolicy:
    parallel: int = 4  # concurrent file transfers
    retries: int = 3  # retries of a transfer after a transient error, per source
    backoff_seconds: float = 2.0  # first back-off; doubles each round


@dataclass
class Transfer:
    """One file to move, from the best of its sources; retried, then the next source."""

    ref: FileRef
    sources: tuple[str, ...]
    target: Callable[[], str]  # a fresh target for each attempt
    checksum: str | None
    source_index: int = 0
    attempts: int = 0
    transient: bool = False  # its last failure was one that trying again could help (a server unreachable)


async def copy_with_retries(
    transfers: list[Transfer], policy: RetryPolicy, progress: Progress, cancel: threading.Event
) -> tuple[list[tuple[Transfer, str]], list[tuple[Transfer, str]]]:
    """Copy all transfers in a worker thread: (done with their targets, failed with the reason).

    Transient errors are retried with back-off, then the next source is tried;
    permanent ones (checksum mismatch, missing file, refused) move on at once.
    """
    done: list[tuple[Transfer, str]] = []
    failed: list[tuple[Transfer, str]] = []
    pending = list(transfers)
    backoff = policy.backoff_seconds
    while pending:
        if cancel.is_set():
            raise Cancelled()
        jobs = [CopyJob(t.sources[t.source_index], t.target(), t.checksum, key=t.ref) for t in pending]
        outcomes = await asyncio.to_thread(run_copies, jobs, policy.parallel, progress, cancel)
        retry: list[Transfer] = []
        for transfer, outcome in zip(pending, outcomes, strict=True):
            if outcome.ok:
                done.append((transfer, outcome.job.target))
                progress.finish(transfer.ref, transfer.ref.size)
                continue
            _remove_local(outcome.job.target)
            transfer.attempts += 1
            transfer.transient = outcome.transient
            log.warning(
                "transfer of %s from %s failed (attempt %d): %s",
                transfer.ref.did,
                plain(outcome.job.source),
                transfer.attempts,
                outcome.message,
            )
            if outcome.transient and transfer.attempts <= policy.retries:
                retry.append(transfer)
            elif transfer.source_index + 1 < len(transfer.sources):
                transfer.source_index += 1
                transfer.attempts = 0
                retry.append(transfer)
            else:
                failed.append((transfer, explain(outcome.message)))
        pending = retry
        if pending:
            await asyncio.sleep(backoff)
            backoff *= 2
    return done, failed


def _remove_local(target: str) -> None:
    if "://" not in target:
        Path(target).unlink(missing_ok=True)


def explain(message: str) -> str:
    """A copy error as a person reads it."""
    lowered = message.lower()
    if "permission denied" in lowered or "[3010]" in lowered or "auth failed" in lowered:
        return f"refused by the storage (token or identity not allowed): {message}"
    if "checksum" in lowered:
        return f"checksum mismatch: the copy differs from the catalog's adler32 ({message})"
    return message
