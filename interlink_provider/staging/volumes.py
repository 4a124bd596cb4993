"""Where a pod's staging volumes are, as the staging engine sees them.

The engine never builds a path into a pod's directory itself: it hands the files it staged
in to `PodVolumes.link_inputs` and asks `PodVolumes.outputs` for the files to stage out.
The site daemon answers through its site-files seam (the pod directory, checked to stay
inside the pod); `VolumeDirs` answers for plain local directories (the `stage` CLI, tests,
benchmarks).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .cache import link_into

# (a file in the content cache, the input volume's index, the file's name in that volume)
InputLink = tuple[Path, int, str]


class PodVolumes(Protocol):
    async def link_inputs(self, links: Sequence[InputLink]) -> None:
        """Give the pod each cached file under its name in its input volume (hard link or copy)."""

    async def outputs(self, index: int) -> list[tuple[str, Path]]:
        """(path relative to the volume, a readable path) of each regular file in output volume
        `index`; symbolic links are not followed and not listed."""


def regular_files(directory: Path) -> list[tuple[str, Path]]:
    """Every regular file below `directory`, sorted, without following symbolic links."""
    found = []
    for root, _, names in os.walk(directory, followlinks=False):
        for filename in sorted(names):
            path = Path(root) / filename
            if path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(directory).as_posix(), path))
    return found


@dataclass(frozen=True)
class VolumeDirs:
    """Staging volumes that are plain local directories (not a pod's on a site)."""

    inputs: Sequence[Path] = ()
    output_dirs: Sequence[Path] = ()

    async def link_inputs(self, links: Sequence[InputLink]) -> None:
        def link_all() -> None:
            for source, i, name in links:
                link_into(source, self.inputs[i] / name)

        await asyncio.to_thread(link_all)

    async def outputs(self, index: int) -> list[tuple[str, Path]]:
        return await asyncio.to_thread(regular_files, self.output_dirs[index])
