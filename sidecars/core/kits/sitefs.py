"""The site's filesystem as the service core sees it: where pod directories are written,
read back, followed and removed.

`LocalFiles` is a filesystem the sidecar shares with the site (it runs on the login
node); `sidecars.core.kits.ssh.SshFiles` reaches the same layout through one SSH
connection (tar over an exec channel to write, SFTP to read). Both keep workdir.py's
rules: paths built from validated names, nothing outside the pod directory.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interlink_provider.pods.jobspec import JobSpec
from sidecars.core.kits import workdir
from sidecars.core.kits.logs import local_from, local_tail
from sidecars.core.kits.script import PodPaths
from sidecars.core.kits.workdir import ContainerFiles


class SiteFiles(ABC):
    async def account_uid(self, account: str | None) -> int | None:
        """The uid of a local account where pod directories are written and jobs run (None: the
        account files are written as here; answers None when there is no such account)."""
        if account is None:
            return os.geteuid()
        try:
            return (await asyncio.to_thread(pwd.getpwnam, account)).pw_uid
        except KeyError:
            return None

    @abstractmethod
    async def materialize(
        self, paths: PodPaths, spec: JobSpec, script: str, account: str | None, files: dict[str, str] | None = None
    ) -> None:
        """Write the pod's directory (volumes, container dirs, job.sh and the submission's extra
        `files` beside it), owned by `account` if given."""

    @abstractmethod
    async def remove(self, paths: PodPaths) -> None: ...

    @abstractmethod
    async def scrub(self, paths: PodPaths, volume_names: list[str]) -> None:
        """Remove secret and projected volume contents once no container can read them."""

    @abstractmethod
    async def read_pod(self, paths: PodPaths, containers: list[str]) -> dict[str, ContainerFiles]: ...

    async def read_container(self, paths: PodPaths, container: str) -> ContainerFiles:
        return (await self.read_pod(paths, [container]))[container]

    @abstractmethod
    async def link_inputs(self, paths: PodPaths, volume: str, links: Sequence[tuple[Path, str]]) -> None:
        """Give the pod each staged file (a path in the sidecar's content cache) under its name in
        `volume`."""

    @abstractmethod
    async def volume_files(self, paths: PodPaths, volume: str) -> list[tuple[str, Path]]:
        """(path relative to the volume, a path the sidecar can read) of each regular file in `volume`."""

    @abstractmethod
    async def read_tail(self, path: str, lines: int) -> tuple[bytes, int, Any]:
        """The file from the start of its last `lines` lines (all of it for 0), that offset, and the
        file's identity (to notice it being replaced while following)."""

    @abstractmethod
    async def read_from(self, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
        """What follows `offset`; a file replaced since (`identity` changed) or shorter is read from 0.
        Returns (data, the offset it starts at, the file's identity)."""


class LocalFiles(SiteFiles):
    async def materialize(
        self, paths: PodPaths, spec: JobSpec, script: str, account: str | None, files: dict[str, str] | None = None
    ) -> None:
        await asyncio.to_thread(workdir.materialize, paths, spec, script, account, files)

    async def remove(self, paths: PodPaths) -> None:
        await asyncio.to_thread(workdir.remove, paths)

    async def scrub(self, paths: PodPaths, volume_names: list[str]) -> None:
        await asyncio.to_thread(workdir.scrub_sensitive, paths, volume_names)

    async def read_pod(self, paths: PodPaths, containers: list[str]) -> dict[str, ContainerFiles]:
        return await asyncio.to_thread(workdir.read_pod, paths, containers)

    async def link_inputs(self, paths: PodPaths, volume: str, links: Sequence[tuple[Path, str]]) -> None:
        await asyncio.to_thread(workdir.link_inputs, paths, volume, links)

    async def volume_files(self, paths: PodPaths, volume: str) -> list[tuple[str, Path]]:
        return await asyncio.to_thread(workdir.volume_files, paths, volume)

    async def read_tail(self, path: str, lines: int) -> tuple[bytes, int, Any]:
        return await asyncio.to_thread(local_tail, path, lines)

    async def read_from(self, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
        return await asyncio.to_thread(local_from, path, offset, identity)


def inside(root: str, path: str) -> bool:
    """`path` is `root` or below it, lexically (for paths on a remote site)."""
    root_path, target = Path(os.path.normpath(root)), Path(os.path.normpath(path))
    return target == root_path or root_path in target.parents
