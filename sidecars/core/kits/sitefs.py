"""The site's filesystem as the service core sees it: where pod directories are written,
read back, followed and removed: the one seam every access to a pod's files goes through.

Every operation acts as one local account: `for_account` gives the view of the pod's own
account. `LocalFiles` is a filesystem the sidecar shares with the site (it runs on the
login node, as the pods' account or as root handing directories over);
`sidecars.core.kits.agents.AgentFiles` asks the pod account's own agent process, so the
kernel decides what may be read; `sidecars.core.kits.ssh.SshFiles` reaches the same layout
through one SSH connection. All keep workdir.py's rules: paths built from validated names,
nothing followed out of the pod directory, every read bounded.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecars.core.kits import logs, workdir
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.workdir import ContainerFiles, DirectoryPlan


class SiteFiles(ABC):
    def for_account(self, account: str) -> SiteFiles:
        """The same files, acted on as `account` ("": as the sidecar itself)."""
        return self

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
    async def materialize(self, paths: PodPaths, plan: DirectoryPlan) -> None:
        """Create the pod's directory from its plan (exclusively: see workdir.create)."""

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

    # Whether the sidecar can read the paths volume_files gives (an agent's pods are its own).
    outputs_readable: bool = True

    async def export_outputs(self, paths: PodPaths, volume: str, destination: Path) -> list[tuple[str, Path]]:
        """The output volume's files where the sidecar can read them: copied into `destination`
        (a directory the sidecar made and let the pod's account write into) when it cannot read
        them in place, else in place."""
        return await self.volume_files(paths, volume)

    @abstractmethod
    async def read_tail(self, path: str, lines: int) -> tuple[bytes, int, Any]:
        """The file from the start of its last `lines` lines (all of it for 0), at most
        logs.READ_LIMIT bytes, that offset, and the file's identity (to notice it being replaced
        while following)."""

    @abstractmethod
    async def read_from(self, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
        """What follows `offset` (at most logs.READ_LIMIT bytes); a file replaced since (`identity`
        changed) or shorter is read from 0. Returns (data, the offset it starts at, its identity)."""


class LocalFiles(SiteFiles):
    """Pod directories on this machine's filesystem, under `pods_root`. With `account`, new
    directories are handed to that account (a root sidecar running jobs as mapped accounts)."""

    def __init__(self, pods_root: str, account: str = "") -> None:
        self.pods_root = pods_root
        self.account = account

    def for_account(self, account: str) -> LocalFiles:
        return self if account == self.account else LocalFiles(self.pods_root, account)

    async def materialize(self, paths: PodPaths, plan: DirectoryPlan) -> None:
        await asyncio.to_thread(workdir.create, paths, plan, self.account or None)

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
        return await asyncio.to_thread(read_tail, self.pods_root, path, lines)

    async def read_from(self, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
        return await asyncio.to_thread(read_from, self.pods_root, path, offset, identity)


def read_tail(pods_root: str, path: str, lines: int) -> tuple[bytes, int, Any]:
    """A log below `pods_root`, reached without following a link (see workdir.opened_file)."""
    with workdir.opened_file(pods_root, path) as fd:
        return (b"", 0, None) if fd is None else logs.tail_of(fd, lines)


def read_from(pods_root: str, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
    with workdir.opened_file(pods_root, path) as fd:
        return (b"", offset, identity) if fd is None else logs.read_after(fd, offset, identity)


def inside(root: str, path: str) -> bool:
    """`path` is `root` or below it, lexically (for paths on a remote site)."""
    return workdir.inside(root, os.fspath(path))
