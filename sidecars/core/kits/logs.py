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
READ_LIMIT = 1024 * 1024  # bytes of a log read at once (every reader of the site's files keeps to it)
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
        found, newlines = scan_back(handle.read(step), position, newlines, lines)
        if found is not None:
            return found
    return 0


def scan_back(block: bytes, position: int, newlines: int, lines: int) -> tuple[int | None, int]:
    """Newlines counted from the end of `block` (which starts at `position` in its file), on top of
    `newlines` already seen: the offset where the last `lines` lines start, once that many are
    seen (else None), and the count so far."""
    for index in range(len(block) - 1, -1, -1):
        if block[index] == 0x0A:
            newlines += 1
            if newlines == lines:
                return position + index + 1, newlines
    return None, newlines


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


def tail_of(fd: int, lines: int, limit: int = READ_LIMIT) -> tuple[bytes, int, Any]:
    """An open log from the start of its last `lines` lines (all for 0), at most `limit` bytes:
    data, the offset it starts at, and the file's identity (device and inode)."""
    with open(fd, "rb", closefd=False) as handle:
        start = tail_offset(handle, lines) if lines else 0
    info = os.fstat(fd)
    return os.pread(fd, limit, start), start, (info.st_dev, info.st_ino)


def read_after(fd: int, offset: int, identity: Any, limit: int = READ_LIMIT) -> tuple[bytes, int, Any]:
    """An open log after `offset` (at most `limit` bytes), from 0 if it was replaced (another
    identity) or shrank: a restarted container's log is rotated."""
    info = os.fstat(fd)
    current = (info.st_dev, info.st_ino)
    if (identity is not None and current != identity) or info.st_size < offset:
        offset = 0
    return os.pread(fd, limit, offset), offset, current


def local_tail(path: str, lines: int) -> tuple[bytes, int, Any]:
    """A local log file by its path (tests, tools): see tail_of."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b"", 0, None
    try:
        return tail_of(fd, lines)
    finally:
        os.close(fd)


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
    """Yield the log in pieces of at most READ_LIMIT bytes read (memory stays bounded however
    large the log); with Follow, keep yielding new lines until `finished()` and drained."""
    formatter = LineFormatter(opts, now or datetime.now(UTC))
    data, offset, identity = await files.read_tail(path, opts.Tail or 0)
    while True:
        more = len(data) >= READ_LIMIT  # the file goes on beyond this read
        out, cut = format_lines(data, formatter, opts.Follow or more)
        if more and cut == 0:  # one line longer than a read: pass it on as it is
            out, cut = format_lines(data, formatter, False)
        offset += cut
        if out:
            yield out
        if formatter.exhausted or not (more or opts.Follow):
            return
        if more:
            data, offset, identity = await files.read_from(path, offset, identity)
            continue
        break
    while not formatter.exhausted:
        done = finished()
        if inspect.isawaitable(done):
            done = await done
        data, base, identity = await files.read_from(path, offset, identity)
        out, cut = format_lines(data, formatter, True)
        if cut == 0 and len(data) >= READ_LIMIT:  # one line longer than a read: pass it on as it is
            out, cut = format_lines(data, formatter, False)
        offset = base + cut
        if out:
            yield out
        elif done:
            return
        elif len(data) < READ_LIMIT:
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
