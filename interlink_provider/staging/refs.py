"""What is moved: a file with its identity, size, checksum and where it can be read."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FileRef:
    scope: str  # "" for a plain URL
    name: str
    size: int | None
    adler32: str | None  # 8 hex digits, lower case; None: take the source's
    sources: tuple[str, ...] = field(default=())  # URLs, best first

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}" if self.scope else self.sources[0]

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def adler32_of(path: Path, block: int = 4 * 1024 * 1024) -> str:
    value = 1
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"
