"""The site as the sidecar reaches it: the batch system's backend, the pods' files, and how
commands get there (here, as the pods' accounts through their agents, or over SSH)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecars.core.kits.agents import AgentFiles, AgentPool, AgentTransport, sudo_launcher
from sidecars.core.kits.backend import Backend
from sidecars.core.kits.ratelimit import TokenBucket
from sidecars.core.kits.sitefs import LocalFiles, SiteFiles
from sidecars.core.kits.ssh import SshFiles, SshLink, SshTransport
from sidecars.core.kits.transport import SUDO_PASSTHROUGH, LocalTransport, Transport, current_user
from sidecars.daemon.config import SiteConfig
from sidecars.htcondor.backend import HTCondorBackend
from sidecars.slurm.backend import SlurmBackend
from sidecars.slurm.restd import SlurmRestBackend

log = logging.getLogger("interlink_provider.sidecar")
SHARED_PODS_ROOT_MODE = 0o1733  # every account makes its own directory in it; nobody lists it


@dataclass
class SiteParts:
    backend: Backend
    files: SiteFiles
    link: SshLink | None = None  # the SSH connection, when the site is reached over SSH
    pool: AgentPool | None = None  # the accounts' agents, when the pods' files are theirs alone
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in [*self.closers, self.backend.close]:
            await close()


def scheduler_environment(config: SiteConfig) -> dict[str, str]:
    if config.backend == "htcondor":
        return HTCondorBackend.command_environment(config.htcondor)
    return dict(config.slurm.environment)


def rate_limit(config: SiteConfig) -> TokenBucket:
    if config.backend == "htcondor":
        return HTCondorBackend.rate_limit(config.htcondor)
    return SlurmBackend.rate_limit(config.slurm)


def agent_executable(config: SiteConfig) -> str:
    """The command the sudoers rule names: the configured one, else this interlink-provider."""
    if config.agents is not None and config.agents.executable:
        return config.agents.executable
    beside = Path(sys.executable).with_name("interlink-provider")
    return str(beside) if beside.exists() else shutil.which("interlink-provider") or "interlink-provider"


def agent_pool(config: SiteConfig) -> AgentPool:
    assert config.agents is not None
    environment = {k: os.environ[k] for k in SUDO_PASSTHROUGH if k in os.environ}
    hello = {"pods_root": config.pods_root, "environment": {**environment, **scheduler_environment(config)}}
    launcher = sudo_launcher(agent_executable(config), current_user())
    return AgentPool(launcher, hello, idle_seconds=config.agents.idle_seconds)


def prepare_shared_pods_root(pods_root: str) -> None:
    """With agents every account makes its own directory in pods_root: it must let them (1733)."""
    root = Path(pods_root)
    if not root.exists():
        root.mkdir(parents=True, mode=0o755)
        os.chmod(root, SHARED_PODS_ROOT_MODE)
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o1333 != 0o1333:
        log.warning(
            "pods_root %s has mode %o: each account's agent creates its own directory there, which needs "
            "mode 1733 (sticky, writable by all, not listable)",
            root,
            mode,
        )


def make_site(config: SiteConfig) -> SiteParts:
    """The backend and the files of the configured site, through the configured transport."""
    limiter, environment = rate_limit(config), scheduler_environment(config)
    link: SshLink | None = None
    pool: AgentPool | None = None
    transport: Transport
    files: SiteFiles
    if config.transport.kind == "ssh":
        assert config.transport.ssh is not None
        link = SshLink(config.transport.ssh)
        transport, files = SshTransport(link, environment, limiter), SshFiles(link)
    elif config.agents is not None:
        pool = agent_pool(config)
        transport, files = AgentTransport(LocalTransport(environment, limiter=limiter), pool), AgentFiles(pool)
    else:
        transport, files = LocalTransport(environment, limiter=limiter), LocalFiles(config.pods_root)
    parts = SiteParts(_backend(config, transport, files), files, link, pool)
    if link is not None:
        parts.closers.append(link.close)
    if pool is not None:
        parts.closers.append(pool.close)
    return parts


def _backend(config: SiteConfig, transport: Transport, files: SiteFiles) -> Backend:
    if config.backend == "htcondor":
        return HTCondorBackend(config.htcondor, config.translation, transport)
    if config.transport.kind == "slurmrestd":
        assert config.transport.slurmrestd is not None
        return SlurmRestBackend(config.slurm, config.translation, config.transport.slurmrestd, files)
    return SlurmBackend(config.slurm, config.translation, transport)
