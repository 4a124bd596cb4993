"""A pod's staging volumes as the staging engine sees them (its `PodVolumes`), reached only
through the site-files seam: the engine never builds a path into a pod's directory."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

from interlink_provider.pods.staging import StagingSpec
from interlink_provider.staging.errors import StagingError
from interlink_provider.staging.volumes import InputLink
from sidecars.core.kits.script import PodPaths
from sidecars.core.kits.sitefs import SiteFiles
from sidecars.core.kits.transport import TransportError
from sidecars.core.kits.workdir import WorkdirError

T = TypeVar("T")


class SiteVolumes:
    """A pod's staging volumes through the site-files seam (the engine's `PodVolumes`)."""

    def __init__(self, files: SiteFiles, paths: PodPaths) -> None:
        self.files = files
        self.paths = paths

    async def link_inputs(self, links: Sequence[InputLink]) -> None:
        by_volume: dict[int, list[tuple[Path, str]]] = {}
        for source, index, name in links:
            by_volume.setdefault(index, []).append((source, name))
        for index, volume_links in by_volume.items():
            await self._seam(self.files.link_inputs(self.paths, StagingSpec.input_volume(index), volume_links))

    async def outputs(self, index: int) -> list[tuple[str, Path]]:
        return await self._seam(self.files.volume_files(self.paths, StagingSpec.output_volume(index)))

    @staticmethod
    async def _seam(call: Awaitable[T]) -> T:
        try:
            return await call
        except (OSError, WorkdirError, TransportError) as exc:
            raise StagingError(f"the pod's volumes: {exc}") from exc
