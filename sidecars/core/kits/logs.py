"""Container logs with kubelet semantics: tail, since, timestamps, byte limit, follow.

The pod runner writes one `<RFC3339Nano> <text>` line per output line. Reading
applies the options the way the kubelet does: the last `Tail` lines, then lines
newer than `SinceSeconds`/`SinceTime`, with or without the timestamp, stopping
after `Bytes` bytes. Following polls the file until the container has ended.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Protocol

from interlink_provider.pods.wire import ContainerLogOpts


class LogSource(Protocol):
    """Where a log is read from (the site's files, here or over SSH)."""

    async def read_tail(self, path: str, lines: int) -> tuple[bytes, int, Any]: ...

    async def read_from(self, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]: ...


CHUNK = 64 * 1024
FOLLOW_POLL_SECONDS = 0.5


def parse_timestamp(text: str) -> datetime | None:
    """RFC 3339 with up to nanoseconds (Python keeps microseconds)."""
    try:
        if text.endswith("Z"):
            text = text[:-1]
        main, _, fraction = text.partition(".")
        moment = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S")
        micros = int((fraction + "000000")[:6]) if fraction else 0
        return moment.replace(microsecond=micros, tzinfo=UTC)
    except ValueError:
        return None


def tail_offset(handle: IO[bytes], lines: int) -> int:
    """Offset of the start of the last `lines` lines of an open binary file."""
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    position = end
    newlines = 0
    # A final newline ends the last line; it does not start a new one.
    if end:
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            newlines = -1
    while position > 0:
        step = min(CHUNK, position)
        position -= step
        handle.seek(position)
        block = handle.read(step)
        for index in range(len(block) - 1, -1, -1):
            if block[index] == 0x0A:
                newlines += 1
                if newlines == lines:
                    return position + index + 1
    return 0


class LineFormatter:
    """Applies since/timestamps/byte-limit to raw stored lines."""

    def __init__(self, opts: ContainerLogOpts, now: datetime) -> None:
        self.timestamps = opts.Timestamps
        self.remaining = opts.Bytes or None
        self.since: datetime | None = None
        if opts.SinceTime is not None:
            self.since = opts.SinceTime
        elif opts.SinceSeconds:
            self.since = now - timedelta(seconds=opts.SinceSeconds)

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def format(self, raw: bytes) -> bytes:
        stamp, sep, text = raw.partition(b" ")
        moment = parse_timestamp(stamp.decode("ascii", "replace")) if sep else None
        if moment is None:  # not a runner line: pass it on as it is
            out = raw
        else:
            if self.since is not None and moment < self.since:
                return b""
            out = raw if self.timestamps else text
        if not out.endswith(b"\n"):
            out += b"\n"
        if self.remaining is not None:
            out = out[: self.remaining]
            self.remaining -= len(out)
        return out


def _split(body: bytes) -> list[bytes]:
    if not body:
        return []
    lines = body.split(b"\n")
    return lines[:-1] if body.endswith(b"\n") else lines


def local_tail(path: str, lines: int) -> tuple[bytes, int, Any]:
    """A local log from the start of its last `lines` lines (all for 0): data, offset, inode."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return b"", 0, None
    with handle:
        start = tail_offset(handle, lines) if lines else 0
        handle.seek(start)
        return handle.read(), start, os.fstat(handle.fileno()).st_ino


def local_from(path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
    """A local log after `offset`, from 0 if it was replaced (another inode) or shrank."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return b"", offset, identity
    with handle:
        stat = os.fstat(handle.fileno())
        if (identity is not None and stat.st_ino != identity) or stat.st_size < offset:
            offset = 0  # a restarted container's log was rotated
        handle.seek(offset)
        return handle.read(), offset, stat.st_ino


def format_lines(data: bytes, formatter: LineFormatter, follow: bool) -> tuple[bytes, int]:
    """Formatted complete lines of `data`, and how many bytes of it they used (when following,
    an unfinished last line is left for the next read)."""
    cut = data.rfind(b"\n") + 1 if follow else len(data)
    out = bytearray()
    for line in _split(data[:cut]):
        if formatter.exhausted:
            break
        out += formatter.format(line)
    return bytes(out), cut


def read_lines(path: str, opts: ContainerLogOpts, formatter: LineFormatter) -> tuple[bytes, int]:
    """A local log, formatted, and the offset reached (for following). Missing file: empty."""
    data, start, _ = local_tail(path, opts.Tail or 0)
    out, cut = format_lines(data, formatter, opts.Follow)
    return out, start + cut


async def stream(
    files: LogSource,
    path: str,
    opts: ContainerLogOpts,
    finished: Callable[[], Awaitable[bool] | bool],
    now: datetime | None = None,
) -> AsyncIterator[bytes]:
    """Yield the log; with Follow, keep yielding new lines until `finished()` and drained."""
    formatter = LineFormatter(opts, now or datetime.now(UTC))
    data, start, identity = await files.read_tail(path, opts.Tail or 0)
    out, cut = format_lines(data, formatter, opts.Follow)
    if out:
        yield out
    if not opts.Follow:
        return
    offset = start + cut
    while not formatter.exhausted:
        done = finished()
        if inspect.isawaitable(done):
            done = await done
        data, base, identity = await files.read_from(path, offset, identity)
        out, cut = format_lines(data, formatter, True)
        offset = base + cut
        if out:
            yield out
        elif done:
            return
        else:
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
