"""Reaching a site that allows only SSH: scheduler commands and pod directories over one
persistent, multiplexed connection to its login node.

Every command and every file transfer is a channel on the same connection (no new
handshake per call); a lost connection is re-established on the next use, with
exponential backoff between failed attempts. Host keys are always checked against
the configured known_hosts file. Pod directories are built locally and shipped as
one tar stream (`tar -x` on an exec channel); status files and logs are read over
SFTP. Jobs of identities mapped to other accounts are submitted with `sudo -n -u`
and their directories given to them, which needs root on the login node, exactly
as the local transport needs a root sidecar.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import posixpath
import shlex
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import asyncssh
from asyncssh.constants import FX_NO_SUCH_FILE
from pydantic import BaseModel, ConfigDict, Field

from sidecars.core.kits import workdir
from sidecars.core.kits.logs import CHUNK, READ_LIMIT, scan_back
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.ratelimit import TokenBucket
from sidecars.core.kits.sitefs import SiteFiles, inside
from sidecars.core.kits.transport import CommandResult, TransportError, metered
from sidecars.core.kits.workdir import CONTAINER_FILES, ContainerFiles, DirectoryPlan, WorkdirError

log = logging.getLogger(__name__)
STAGING_NEEDS_LOCAL_FILES = "datalake staging needs the pods' directories on the sidecar's filesystem (not over SSH)"


class SshConfig(BaseModel):
    """`transport.ssh`: the login node and how to authenticate to it."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="the login node's host name or address")
    port: int = Field(22, ge=1, le=65535, description="its SSH port")
    user: str = Field(description="account the sidecar logs in as (other accounts' jobs go through `sudo -n -u`)")
    key_file: str = Field(description="private key of the sidecar (mode 0600)")
    known_hosts: str = Field(description="the login node's host key(s): checked on every connection")
    connect_timeout: float = Field(15.0, gt=0, description="seconds to establish the connection before it fails")
    keepalive_seconds: float = Field(15.0, gt=0, description="a dead link is noticed after 3 missed keepalives")
    max_backoff_seconds: float = Field(60.0, gt=0, description="longest wait between reconnection attempts")


class SshLink:
    """The one connection to the login node; reconnects on demand, with backoff after failures."""

    def __init__(self, config: SshConfig) -> None:
        self.config = config
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self.connects = 0  # how many times a connection was (re)established

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise TransportError(f"ssh {self.config.host}: reconnecting in {wait:.0f}s after: {self._last_error}")
            try:
                self._conn = await asyncssh.connect(
                    self.config.host,
                    port=self.config.port,
                    username=self.config.user,
                    client_keys=[self.config.key_file],
                    known_hosts=self.config.known_hosts,
                    connect_timeout=self.config.connect_timeout,
                    keepalive_interval=self.config.keepalive_seconds,
                    keepalive_count_max=3,
                    agent_path=None,
                    config=None,
                )
            except (OSError, asyncssh.Error) as exc:
                self._backoff = min(max(1.0, self._backoff * 2), self.config.max_backoff_seconds)
                self._retry_at = time.monotonic() + self._backoff
                self._last_error = _describe(exc)
                raise TransportError(f"ssh {self.config.host}: {self._last_error}") from exc
            self._sftp, self._backoff, self.connects = None, 0.0, self.connects + 1
            if self.connects > 1:
                log.info("ssh %s: reconnected", self.config.host)
            return self._conn

    def lost(self, exc: BaseException) -> None:
        """A channel failed: drop the connection so the next call makes a new one."""
        log.warning("ssh %s: connection lost: %s", self.config.host, _describe(exc))
        if self._conn is not None:
            self._conn.abort()
        self._conn, self._sftp = None, None

    async def run(self, command: str, timeout: float, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        conn = await self.connection()
        try:
            result = await asyncio.wait_for(conn.run(command, input=stdin, check=False, encoding=None), timeout)
        except TimeoutError as exc:
            raise TransportError(f"ssh {self.config.host}: no answer within {timeout:.0f}s") from exc
        except (OSError, asyncssh.Error) as exc:
            self.lost(exc)
            raise TransportError(f"ssh {self.config.host}: {_describe(exc)}") from exc
        code = result.exit_status if result.exit_status is not None else -1
        return code, _output(result.stdout), _output(result.stderr)

    async def sftp(self) -> asyncssh.SFTPClient:
        conn = await self.connection()
        if self._sftp is None:
            try:
                self._sftp = await conn.start_sftp_client()
            except (OSError, asyncssh.Error) as exc:
                self.lost(exc)
                raise TransportError(f"ssh {self.config.host}: sftp: {_describe(exc)}") from exc
        return self._sftp

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None


class SshTransport:
    """Scheduler commands on the login node (same interface as transport.LocalTransport)."""

    def __init__(
        self,
        link: SshLink,
        env: dict[str, str] | None = None,
        limiter: TokenBucket | None = None,
        sudo_user: str | None = None,
    ) -> None:
        self.link = link
        self.env = dict(env or {})
        self.limiter = limiter
        self.sudo_user = sudo_user

    def as_account(self, account: str | None) -> SshTransport:
        """The same link acting as another account of the login node (`sudo -n -u ACCOUNT`)."""
        if not account or account == self.link.config.user:
            return self
        return SshTransport(self.link, self.env, self.limiter, sudo_user=account)

    def command_line(self, argv: list[str]) -> str:
        words = shlex.join([*(f"{k}={v}" for k, v in self.env.items()), *argv])
        if not self.sudo_user:
            return f"env {words}" if self.env else shlex.join(argv)
        # sudo resets the environment: the login's SLURM_CONF (sshd SetEnv, profile) is handed on.
        return f'sudo -n -u {shlex.quote(self.sudo_user)} -- env ${{SLURM_CONF:+"SLURM_CONF=$SLURM_CONF"}} ' + words

    async def run(self, argv: list[str], *, timeout: float = 30.0) -> CommandResult:
        command = os.path.basename(argv[0])
        async with metered(command, self.limiter) as meter:
            code, out, err = await self.link.run(self.command_line(argv), timeout)
            meter.exit_status(code == 0)
        return CommandResult(tuple(argv), code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


class SshFiles(SiteFiles):
    """Pod directories on the login node's shared filesystem, over the same connection."""

    def __init__(self, link: SshLink, timeout: float = 120.0, account: str = "") -> None:
        self.link = link
        self.timeout = timeout
        self.account = account  # new directories are handed to it (the sidecar logs in as root)

    async def account_uid(self, account: str | None) -> int | None:
        """Accounts live on the login node: `id -u` there (None: the SSH user's own)."""
        name = self.link.config.user if account is None else account
        code, out, _ = await self.link.run(f"id -u -- {shlex.quote(name)}", self.timeout)
        text = out.decode(errors="replace").strip()
        return int(text) if code == 0 and text.isdigit() else None

    def for_account(self, account: str) -> SshFiles:
        return self if account == self.account else SshFiles(self.link, self.timeout, account)

    async def materialize(self, paths: PodPaths, plan: DirectoryPlan) -> None:
        account = self.account
        give = account and account != self.link.config.user
        if give and self.link.config.user != "root":
            raise WorkdirError(
                f"running jobs as {account!r} over SSH needs the sidecar to log in as root "
                f"(it logs in as {self.link.config.user})"
            )
        if not inside(paths.pods_root, paths.pod_dir) or paths.pod_dir == paths.pods_root:
            raise WorkdirError(f"pod directory {paths.pod_dir} is outside {paths.pods_root}")
        archive = await asyncio.to_thread(_pack, paths, plan)
        code, _, err = await self.link.run(
            _unpack_command(paths, plan.uid, account if give else ""), self.timeout, stdin=archive
        )
        if code != 0:
            raise WorkdirError(
                f"writing {paths.pod_dir} on {self.link.config.host}: {err.decode(errors='replace').strip()}"
            )

    async def remove(self, paths: PodPaths) -> None:
        if not inside(paths.pods_root, paths.pod_dir) or paths.pod_dir == paths.pods_root:
            raise WorkdirError(f"refusing to remove {paths.pod_dir}: outside {paths.pods_root}")
        await self.link.run(f"rm -rf -- {shlex.quote(paths.pod_dir)}", self.timeout)

    async def scrub(self, paths: PodPaths, volume_names: list[str]) -> None:
        targets = [paths.volume_dir(name) for name in volume_names]
        targets = [t for t in targets if inside(paths.pod_dir, t) and t != paths.pod_dir]
        if targets:
            await self.link.run("rm -rf -- " + " ".join(shlex.quote(t) for t in targets), self.timeout)

    async def read_pod(self, paths: PodPaths, containers: list[str]) -> dict[str, ContainerFiles]:
        names = [(c, f) for c in containers for f in CONTAINER_FILES]
        texts = await asyncio.gather(*(self._small(posixpath.join(paths.container_dir(c), f)) for c, f in names))
        found: dict[str, dict[str, str | None]] = {c: {} for c in containers}
        for (container, name), text in zip(names, texts, strict=True):
            found[container][name] = text
        return {c: workdir.container_files(found[c]) for c in containers}

    async def _small(self, path: str) -> str | None:
        found = await self._read(path, 0, limit=4096)
        return None if found is None else found[0].decode("utf-8", "replace").strip()

    async def link_inputs(self, paths: PodPaths, volume: str, links: Sequence[tuple[Path, str]]) -> None:
        raise WorkdirError(STAGING_NEEDS_LOCAL_FILES)

    async def volume_files(self, paths: PodPaths, volume: str) -> list[tuple[str, Path]]:
        raise WorkdirError(STAGING_NEEDS_LOCAL_FILES)

    async def read_tail(self, path: str, lines: int) -> tuple[bytes, int, Any]:
        found = await self._read(path, 0, READ_LIMIT, tail=lines)
        return found or (b"", 0, None)

    async def read_from(self, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
        return await self._read(path, offset, READ_LIMIT) or (b"", offset, identity)

    async def _read(self, path: str, offset: int, limit: int, tail: int = 0) -> tuple[bytes, int, int] | None:
        """At most `limit` bytes from `offset` (or from the start of the last `tail` lines); a file
        now shorter than `offset` was replaced: from 0. (data, the offset it starts at, the file's
        size), or None when there is no such file."""
        sftp = await self.link.sftp()
        try:
            async with sftp.open(path, "rb") as handle:
                size = (await handle.stat()).size or 0
                if size < offset:
                    offset = 0  # a restarted container's log was rotated
                if tail:
                    offset = await _tail_start(handle, size, tail)
                await handle.seek(offset)
                return await handle.read(limit), offset, size
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            return None
        except asyncssh.SFTPError as exc:
            if exc.code == FX_NO_SUCH_FILE:
                return None
            raise TransportError(f"ssh {self.link.config.host}: reading {path}: {exc.reason}") from exc
        except (OSError, asyncssh.Error) as exc:
            self.link.lost(exc)
            raise TransportError(f"ssh {self.link.config.host}: {_describe(exc)}") from exc


async def _tail_start(handle: asyncssh.SFTPClientFile, size: int, lines: int) -> int:
    """Offset of the start of the last `lines` lines of a remote file, read backwards in chunks."""
    position, newlines = size, 0
    if size:
        await handle.seek(size - 1)
        if cast(bytes, await handle.read(1)) == b"\n":  # opened "rb": bytes
            newlines = -1  # a final newline ends the last line; it does not start a new one
    while position > 0:
        step = min(CHUNK, position)
        position -= step
        await handle.seek(position)
        found, newlines = scan_back(cast(bytes, await handle.read(step)), position, newlines, lines)
        if found is not None:
            return found
    return 0


def _pack(paths: PodPaths, plan: DirectoryPlan) -> bytes:
    """The pod directory, written from its plan in a scratch root, as a tar.gz."""
    with tempfile.TemporaryDirectory(prefix="ilp-ssh-") as scratch:
        local = PodPaths(pods_root=scratch, pod_dir=posixpath.join(scratch, "pod"))
        workdir.create(local, plan)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=3) as archive:
            archive.add(local.pod_dir, arcname=posixpath.basename(paths.pod_dir))
        return buffer.getvalue()


def _unpack_command(paths: PodPaths, uid: str, account: str) -> str:
    """Shell on the login node: the pod directory created exclusively (a leftover of an interrupted
    create of this same pod, known by its marker, is replaced; anything else refuses), then
    unpacked, then handed to `account` if given."""
    pod_dir, parent = shlex.quote(paths.pod_dir), shlex.quote(posixpath.dirname(paths.pod_dir))
    marker = shlex.quote(posixpath.join(paths.pod_dir, workdir.MARKER))
    command = (
        f"if [ -e {pod_dir} ] || [ -L {pod_dir} ]; then "
        f'[ "$(cat {marker} 2>/dev/null)" = {shlex.quote(uid)} ] && rm -rf -- {pod_dir} '
        f"|| {{ echo {pod_dir} already exists and belongs to no record of this pod >&2; exit 3; }}; fi && "
        f"mkdir -p -m 0711 {parent} && tar -x -z -p --no-same-owner -f - -C {parent}"
    )
    if account:
        # children first: the account can write into a directory only once all below it is settled
        command += f" && find {pod_dir} -depth -exec chown -h -- {shlex.quote(account)}: {{}} +"
    return command


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return f"the login node's host key is not the one in known_hosts ({exc.reason})"
    reason = getattr(exc, "reason", None)
    return str(reason or exc) or type(exc).__name__


def _output(data: bytes | str | None) -> bytes:
    """A command's output: asyncssh types it bytes-or-str, but with encoding=None it is always bytes."""
    if isinstance(data, str):
        raise TypeError("asyncssh decoded a command's output although no encoding was asked for")
    return bytes(data or b"")
