"""Log reading options, on files in the runner's format."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from interlink_provider.pods.wire import ContainerLogOpts
from sidecars.core.kits.logs import LineFormatter, read_lines, stream
from sidecars.core.kits.sitefs import LocalFiles

LINES = [
    "2026-01-01T00:00:01.000000001Z first",
    "2026-01-01T00:00:02.500000000Z second",
    "2026-01-01T00:00:03.000000000Z ",
    "2026-01-01T00:00:04.000000000Z fourth with  spaces",
]
NOW = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


def read(tmp_path, text: str, **opts) -> str:
    path = tmp_path / "log"
    path.write_text(text)
    options = ContainerLogOpts(**opts)
    data, _ = read_lines(str(path), options, LineFormatter(options, NOW))
    return data.decode()


def test_plain_tail_timestamps_and_bytes(tmp_path):
    text = "\n".join(LINES) + "\n"
    assert read(tmp_path, text) == "first\nsecond\n\nfourth with  spaces\n"
    assert read(tmp_path, text, Tail=2) == "\nfourth with  spaces\n"
    assert read(tmp_path, text, Tail=10) == "first\nsecond\n\nfourth with  spaces\n"
    assert read(tmp_path, text, Timestamps=True).splitlines()[0] == LINES[0]
    assert read(tmp_path, text, Bytes=8) == "first\nse"


def test_since_seconds_and_since_time(tmp_path):
    text = "\n".join(LINES) + "\n"
    assert read(tmp_path, text, SinceSeconds=3) == "second\n\nfourth with  spaces\n"
    assert read(tmp_path, text, SinceTime="2026-01-01T00:00:03Z") == "\nfourth with  spaces\n"
    # Go's zero time means "not set".
    assert read(tmp_path, text, SinceTime="0001-01-01T00:00:00Z").startswith("first")


def test_missing_file_and_partial_last_line(tmp_path):
    options = ContainerLogOpts()
    assert read_lines(str(tmp_path / "none"), options, LineFormatter(options, NOW)) == (b"", 0)
    assert read(tmp_path, LINES[0] + "\n" + "2026-01-01T00:00:02Z no newline") == "first\nno newline\n"


def test_tail_on_large_files_reads_from_the_end(tmp_path):
    text = "".join(f"2026-01-01T00:00:00.000000000Z line {i}\n" for i in range(50000))
    assert read(tmp_path, text, Tail=3) == "line 49997\nline 49998\nline 49999\n"


def test_follow_picks_up_new_lines_and_stops_when_finished(tmp_path):
    path = tmp_path / "log"
    path.write_text(LINES[0] + "\n")
    done = {"value": False}

    async def go() -> list[bytes]:
        chunks = []
        async for chunk in stream(
            LocalFiles(str(tmp_path)), str(path), ContainerLogOpts(Follow=True), lambda: done["value"], NOW
        ):
            chunks.append(chunk)
            if len(chunks) == 1:
                with path.open("a") as handle:
                    handle.write(LINES[1] + "\n" + "2026-01-01T00:00:03Z part")
            elif len(chunks) == 2:
                with path.open("a") as handle:
                    handle.write("ial\n")
                done["value"] = True
        return chunks

    chunks = asyncio.run(asyncio.wait_for(go(), 10))
    assert b"".join(chunks) == b"first\nsecond\npartial\n"
