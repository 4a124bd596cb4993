"""Per-account agents, from the sidecar's side: started on demand, one per account, kept while
busy, let go when idle, started again when they die.

Open OnDemand's model: the sidecar runs as an unprivileged service account and never opens a
path inside a pod directory; everything that touches an account's pods is asked of that
account's own agent (`interlink-provider site agent`, started through one sudo rule as the
account), so the kernel decides what may be read or written. `AgentFiles` and
`AgentTransport` put the agents behind the same seams as local files and the SSH transport.
An agent keeps no state: a crash fails only the requests in flight (the callers retry, as
after any transport error) and the next request starts a new agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sidecars.core.kits import agentwire as wire
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.ratelimit import TokenBucket
from sidecars.core.kits.sitefs import SiteFiles
from sidecars.core.kits.transport import (
    CommandResult,
    LocalTransport,
    Transport,
    TransportError,
    current_user,
    metered,
)
from sidecars.core.kits.workdir import ContainerFiles, DirectoryPlan, DirectoryTaken, WorkdirError

log = logging.getLogger(__name__)

# The command that starts an account's agent: its argv, given the account.
Launcher = Callable[[str], list[str]]


def sudo_launcher(executable: str, own_account: str) -> Launcher:
    """`sudo -n -u ACCOUNT -- EXECUTABLE site agent` (the sudoers rule names exactly this command);
    the sidecar's own account needs no sudo."""

    def argv(account: str) -> list[str]:
        agent = [executable, "site", "agent"]
        return agent if account == own_account else ["sudo", "-n", "-u", account, "--", *agent]

    return argv


class AgentGone(TransportError):
    """The agent could not be started, or died with requests in flight."""


class Agent:
    """One account's agent process and the requests in flight to it."""

    def __init__(self, account: str, process: asyncio.subprocess.Process) -> None:
        self.account = account
        self.process = process
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.last_used = time.monotonic()
        self.reader: asyncio.Task[None] | None = None
        self.dead = ""

    @property
    def alive(self) -> bool:
        return not self.dead and self.process.returncode is None

    async def call(self, op: str, args: dict[str, Any], timeout: float) -> Any:
        if not self.alive:
            raise AgentGone(f"the agent of {self.account} is gone: {self.dead or 'exited'}")
        request = wire.Request(next(self.ids), op, args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[request.id] = future
        self.last_used = time.monotonic()
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(wire.request_line(request))
            await self.process.stdin.drain()
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (ConnectionError, BrokenPipeError) as exc:
            raise AgentGone(f"the agent of {self.account} went away: {exc}") from exc
        except TimeoutError as exc:
            raise TransportError(f"the agent of {self.account} did not answer {op} within {timeout:.0f}s") from exc
        finally:
            self.pending.pop(request.id, None)
            self.last_used = time.monotonic()

    async def read_answers(self) -> None:
        """Resolve each request's future as its answer arrives; fail them all when the agent dies."""
        assert self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                answer = wire.parse_answer(line)
                future = self.pending.get(answer.id)
                if future is None or future.done():
                    continue
                if answer.error_kind:
                    future.set_exception(_exception(self.account, answer))
                else:
                    future.set_result(answer.ok)
            self.dead = f"exited with {await self.process.wait()}"
        except (wire.WireError, ValueError) as exc:  # a broken agent: stop trusting its output
            self.dead = f"unreadable answer: {exc}"
            self.process.kill()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(AgentGone(f"the agent of {self.account} {self.dead}"))
                future.exception()  # retrieved: a caller that gave up causes no warning

    async def close(self) -> None:
        """Let it go: its stdin closes and it exits once its answers are written."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


def _exception(account: str, answer: wire.Answer) -> Exception:
    message = f"agent of {account}: {answer.error}"
    if answer.error_kind == "workdir":
        return WorkdirError(answer.error)
    if answer.error_kind == "taken":
        return DirectoryTaken(answer.error)
    if answer.error_kind == "os":
        return OSError(message)
    if answer.error_kind == "transport":
        return TransportError(answer.error)
    return AgentGone(message)


class AgentPool:
    """One agent per account, started when first needed and let go after `idle_seconds`."""

    def __init__(
        self, launcher: Launcher, hello: dict[str, Any], idle_seconds: float = 300, start_timeout: float = 30
    ) -> None:
        self.launcher = launcher
        self.hello = hello
        self.idle_seconds = idle_seconds
        self.start_timeout = start_timeout
        self.agents: dict[str, Agent] = {}
        self.starts = 0  # how many agents were started (for tests and benchmarks)
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def call(self, account: str, op: str, args: dict[str, Any], timeout: float = 120) -> Any:
        agent = await self._agent(account)
        return await agent.call(op, args, timeout)

    async def _agent(self, account: str) -> Agent:
        found = self.agents.get(account)
        if found is not None and found.alive:
            return found
        async with self._locks.setdefault(account, asyncio.Lock()):
            found = self.agents.get(account)
            if found is not None and found.alive:
                return found
            self.agents[account] = agent = await self._start(account)
            if self._reaper is None or self._reaper.done():
                self._reaper = asyncio.create_task(self._reap(), name="agent-reaper")
            return agent

    async def _start(self, account: str) -> Agent:
        argv = self.launcher(account)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=wire.MAX_LINE
            )
        except OSError as exc:
            raise AgentGone(f"cannot start the agent of {account}: {exc}") from exc
        agent = Agent(account, process)
        agent.reader = asyncio.create_task(agent.read_answers(), name=f"agent-{account}")
        self.starts += 1
        try:
            said = await agent.call("hello", self.hello, self.start_timeout)
        except TransportError as exc:
            await agent.close()
            raise AgentGone(
                f"the agent of {account} did not start ({' '.join(argv[:5])} ...): {exc} "
                "(is the sudoers rule installed, and the account in its group?)"
            ) from exc
        if not isinstance(said, dict) or said.get("account") != account:
            await agent.close()
            raise AgentGone(f"the agent started for {account} runs as {said!r}: refusing it")
        log.info("agent of %s started (pid %s)", account, said.get("pid"))
        return agent

    async def _reap(self) -> None:
        """Let idle agents go (an account with no pod being acted on holds no process)."""
        while self.agents:
            await asyncio.sleep(max(1.0, min(self.idle_seconds / 4, 30)))
            now = time.monotonic()
            for account, agent in list(self.agents.items()):
                if not agent.alive or (not agent.pending and now - agent.last_used > self.idle_seconds):
                    self.agents.pop(account, None)
                    await agent.close()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        agents, self.agents = list(self.agents.values()), {}
        await asyncio.gather(*(agent.close() for agent in agents), return_exceptions=True)


class AgentFiles(SiteFiles):
    """The pod directories of one account, through that account's agent."""

    outputs_readable = False  # the account's own files: the sidecar reads exported copies

    def __init__(self, pool: AgentPool, account: str = "") -> None:
        self.pool = pool
        self.account = account

    def for_account(self, account: str) -> AgentFiles:
        return self if account == self.account else AgentFiles(self.pool, account)

    async def _call(self, op: str, **args: Any) -> Any:
        if not self.account:
            raise WorkdirError("a pod's files are reached through its own account's agent: no account given")
        return await self.pool.call(self.account, op, args)

    async def materialize(self, paths: PodPaths, plan: DirectoryPlan) -> None:
        await self._call("materialize", paths=wire.paths_json(paths), plan=plan.to_json())

    async def remove(self, paths: PodPaths) -> None:
        await self._call("remove", paths=wire.paths_json(paths))

    async def scrub(self, paths: PodPaths, volume_names: list[str]) -> None:
        await self._call("scrub", paths=wire.paths_json(paths), volumes=list(volume_names))

    async def read_pod(self, paths: PodPaths, containers: list[str]) -> dict[str, ContainerFiles]:
        found = await self._call("read_pod", paths=wire.paths_json(paths), containers=list(containers))
        return {name: _container_files(found.get(name) or {}) for name in containers}

    async def link_inputs(self, paths: PodPaths, volume: str, links: Sequence[tuple[Path, str]]) -> None:
        pairs = [[str(source), name] for source, name in links]
        await self._call("link_inputs", paths=wire.paths_json(paths), volume=volume, links=pairs)

    async def volume_files(self, paths: PodPaths, volume: str) -> list[tuple[str, Path]]:
        found = await self._call("volume_files", paths=wire.paths_json(paths), volume=volume)
        return [(str(relative), Path(str(path))) for relative, path in found]

    async def export_outputs(self, paths: PodPaths, volume: str, destination: Path) -> list[tuple[str, Path]]:
        """The output volume's files copied where the sidecar can read them (it cannot read the pod's)."""
        found = await self._call(
            "export_outputs", paths=wire.paths_json(paths), volume=volume, destination=str(destination)
        )
        return [(str(relative), Path(str(path))) for relative, path in found]

    async def read_tail(self, path: str, lines: int) -> tuple[bytes, int, Any]:
        found = await self._call("read_tail", path=path, lines=lines)
        return wire.decode_bytes(found["b64"]), int(found["offset"]), wire.identity_of(found["identity"])

    async def read_from(self, path: str, offset: int, identity: Any) -> tuple[bytes, int, Any]:
        found = await self._call("read_from", path=path, offset=offset, identity=wire.identity_json(identity))
        return wire.decode_bytes(found["b64"]), int(found["offset"]), wire.identity_of(found["identity"])


def _container_files(data: dict[str, Any]) -> ContainerFiles:
    last = data.get("last_state")
    return ContainerFiles(**{**data, "last_state": (int(last[0]), str(last[1]), str(last[2])) if last else None})


class AgentTransport:
    """Scheduler commands: the sidecar's own run here; another account's run by its agent. Every
    command takes a token from the site's bucket first, wherever it runs."""

    def __init__(self, local: LocalTransport, pool: AgentPool, account: str | None = None) -> None:
        self.local = local
        self.pool = pool
        self.account = account

    def as_account(self, account: str | None) -> Transport:
        if not account or account == current_user():
            return self.local
        return AgentTransport(self.local, self.pool, account)

    @property
    def limiter(self) -> TokenBucket | None:
        return self.local.limiter

    async def run(self, argv: list[str], *, timeout: float = 30.0) -> CommandResult:
        if not self.account:
            return await self.local.run(argv, timeout=timeout)
        command = os.path.basename(argv[0])
        async with metered(command, self.limiter) as meter:
            done = await self.pool.call(self.account, "run", {"argv": argv, "timeout": timeout}, timeout + 10)
            meter.exit_status(done["returncode"] == 0)
        return CommandResult(tuple(argv), int(done["returncode"]), str(done["stdout"]), str(done["stderr"]))
