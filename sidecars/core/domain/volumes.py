"""A pod's staging volumes as the staging engine sees them (its `PodVolumes`), reached only
through the site-files seam: the engine never builds a path into a pod's directory.

Staged inputs are files of the sidecar's content cache (the sidecar's alone, 0600): the pod's
account is added to a file's ACL before the file is linked (or, where the kernel will not link
another's file, copied) into the pod. Outputs the sidecar cannot read in place (an agent's
pods are its account's own) are copied by the agent into an export directory the sidecar
made for the pod and let the account write into, and removed once staged out.
"""

from __future__ import annotations

import asyncio
import posixpath
import shutil
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

from interlink_provider.pods.staging import StagingSpec
from interlink_provider.staging.errors import StagingError
from interlink_provider.staging.volumes import InputLink
from sidecars.core.kits import acl
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.sitefs import SiteFiles
from sidecars.core.kits.transport import TransportError, current_user
from sidecars.core.kits.workdir import WorkdirError

T = TypeVar("T")
EXPORT_MODE = 0o700


class SiteVolumes:
    """A pod's staging volumes through the site-files seam (the engine's `PodVolumes`)."""

    def __init__(self, files: SiteFiles, paths: PodPaths, account: str = "", exports: Path | None = None) -> None:
        self.files = files
        self.paths = paths
        self.account = account if account and account != current_user() else ""
        self.exports = exports
        self._made: list[Path] = []

    async def link_inputs(self, links: Sequence[InputLink]) -> None:
        by_volume: dict[int, list[tuple[Path, str]]] = {}
        for source, index, name in links:
            by_volume.setdefault(index, []).append((source, name))
        if self.account:
            await self._seam(asyncio.to_thread(self._grant_read, [source for source, _, _ in links]))
        for index, volume_links in by_volume.items():
            await self._seam(self.files.link_inputs(self.paths, StagingSpec.input_volume(index), volume_links))

    def _grant_read(self, sources: list[Path]) -> None:
        for source in dict.fromkeys(sources):
            acl.grant(source, self.account, acl.READ)

    async def outputs(self, index: int) -> list[tuple[str, Path]]:
        volume = StagingSpec.output_volume(index)
        if self.files.outputs_readable or self.exports is None:
            return await self._seam(self.files.volume_files(self.paths, volume))
        destination = self.exports / f"{posixpath.basename(self.paths.pod_dir)}-{volume}"
        await self._seam(asyncio.to_thread(self._make_export, destination))
        return await self._seam(self.files.export_outputs(self.paths, volume, destination))

    def _make_export(self, destination: Path) -> None:
        self.exports_root()
        shutil.rmtree(destination, ignore_errors=True)  # a stage-out started again: afresh
        destination.mkdir(mode=EXPORT_MODE)
        self._made.append(destination)
        if self.account:
            acl.grant(destination, self.account, acl.READ | acl.WRITE | acl.EXECUTE)

    def exports_root(self) -> None:
        assert self.exports is not None
        self.exports.mkdir(parents=True, exist_ok=True, mode=0o711)

    async def release(self) -> None:
        """The exported copies are staged out (or given up): remove them."""
        made, self._made = self._made, []
        for path in made:
            await asyncio.to_thread(shutil.rmtree, path, True)

    @staticmethod
    async def _seam(call: Awaitable[T]) -> T:
        try:
            return await call
        except (OSError, WorkdirError, TransportError) as exc:
            raise StagingError(f"the pod's volumes: {exc}") from exc
