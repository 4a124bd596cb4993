"""`interlink-provider site agent`: one account's agent, speaking agentwire on stdin/stdout.

It is started by the sidecar (directly, or as another account through `sudo -n -u ACCOUNT`),
learns what it needs from the `hello` request, and then acts only inside its own account's
part of the pods root (`pods_root/<account>/...`): a request naming any other path is refused
whatever it says. It keeps no state: when it dies, the sidecar starts another one. It exits
when its stdin closes (the sidecar let it go idle, or went away).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import posixpath
import pwd
import shutil
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from interlink_provider import __version__, logsetup
from interlink_provider.bounded import run_bounded, text
from sidecars.core.kits import agentwire as wire
from sidecars.core.kits import sitefs, workdir
from sidecars.core.kits.podpaths import PodPaths
from sidecars.core.kits.workdir import DirectoryPlan, WorkdirError

log = logging.getLogger("interlink_provider.agent")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Refused(Exception):
    """A request outside this agent's account: never acted on."""


class Agent:
    def __init__(self) -> None:
        self.account = pwd.getpwuid(os.geteuid()).pw_name
        self.pods_root = ""
        self.environment: dict[str, str] = {}
        self.handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "hello": self.hello,
            "materialize": self.materialize,
            "remove": self.remove,
            "scrub": self.scrub,
            "read_pod": self.read_pod,
            "link_inputs": self.link_inputs,
            "volume_files": self.volume_files,
            "read_tail": self.read_tail,
            "read_from": self.read_from,
            "run": self.run,
            "export_outputs": self.export_outputs,
        }

    @property
    def account_root(self) -> str:
        return posixpath.join(self.pods_root, self.account)

    # ------------------------------------------------------------------ checks

    def pod(self, args: dict[str, Any]) -> PodPaths:
        """The request's pod: one of this account's, below its own directory of the pods root."""
        if not self.pods_root:
            raise Refused("no hello yet")
        paths = wire.paths_of(args.get("paths"))
        if paths.pods_root != self.pods_root or not workdir.inside(self.account_root, paths.pod_dir):
            raise Refused(f"{paths.pod_dir} is not below {self.account_root}")
        if os.path.normpath(paths.pod_dir) == os.path.normpath(self.account_root):
            raise Refused("the account's own directory is not a pod")
        return paths

    def own_file(self, path: object) -> str:
        if not isinstance(path, str) or not self.pods_root or not workdir.inside(self.account_root, path):
            raise Refused(f"{path!r} is not below {self.account_root}")
        return path

    # ------------------------------------------------------------------ operations

    async def hello(self, args: dict[str, Any]) -> dict[str, Any]:
        root = args.get("pods_root")
        if not isinstance(root, str) or not root.startswith("/"):
            raise Refused("hello names an absolute pods_root")
        self.pods_root = posixpath.normpath(root)
        environment = args.get("environment") or {}
        self.environment = {str(k): str(v) for k, v in dict(environment).items()}
        return {
            "account": self.account,
            "uid": os.geteuid(),
            "pid": os.getpid(),
            "version": __version__,
            "protocol": wire.PROTOCOL,
        }

    async def materialize(self, args: dict[str, Any]) -> None:
        paths = self.pod(args)
        plan = DirectoryPlan.from_json(args["plan"])
        await asyncio.to_thread(workdir.create, paths, plan)

    async def remove(self, args: dict[str, Any]) -> None:
        await asyncio.to_thread(workdir.remove, self.pod(args))

    async def scrub(self, args: dict[str, Any]) -> None:
        volumes = [str(v) for v in args.get("volumes", [])]
        await asyncio.to_thread(workdir.scrub_sensitive, self.pod(args), volumes)

    async def read_pod(self, args: dict[str, Any]) -> dict[str, Any]:
        containers = [str(c) for c in args.get("containers", [])]
        found = await asyncio.to_thread(workdir.read_pod, self.pod(args), containers)
        return {name: dataclasses.asdict(files) for name, files in found.items()}

    async def link_inputs(self, args: dict[str, Any]) -> None:
        links = [(Path(str(source)), str(name)) for source, name in args.get("links", [])]
        await asyncio.to_thread(workdir.link_inputs, self.pod(args), str(args["volume"]), links)

    async def volume_files(self, args: dict[str, Any]) -> list[list[str]]:
        found = await asyncio.to_thread(workdir.volume_files, self.pod(args), str(args["volume"]))
        return [[relative, str(path)] for relative, path in found]

    async def export_outputs(self, args: dict[str, Any]) -> list[list[str]]:
        """Copy the files of an output volume into `destination` (a directory the sidecar made for
        this pod and let this account write into), readable by the sidecar: what it stages out."""
        paths = self.pod(args)
        destination = Path(str(args["destination"]))
        found = await asyncio.to_thread(workdir.volume_files, paths, str(args["volume"]))
        return await asyncio.to_thread(_export, found, destination)

    async def read_tail(self, args: dict[str, Any]) -> dict[str, Any]:
        path = self.own_file(args.get("path"))
        data, offset, identity = await asyncio.to_thread(sitefs.read_tail, self.pods_root, path, int(args["lines"]))
        return {"b64": wire.encode_bytes(data), "offset": offset, "identity": wire.identity_json(identity)}

    async def read_from(self, args: dict[str, Any]) -> dict[str, Any]:
        path = self.own_file(args.get("path"))
        data, offset, identity = await asyncio.to_thread(
            sitefs.read_from, self.pods_root, path, int(args["offset"]), wire.identity_of(args.get("identity"))
        )
        return {"b64": wire.encode_bytes(data), "offset": offset, "identity": wire.identity_json(identity)}

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        argv = [str(word) for word in args.get("argv", [])]
        if not argv:
            raise Refused("run needs a command")
        timeout = float(args.get("timeout", 30.0))
        environment = {"PATH": DEFAULT_PATH, "LC_ALL": "C", **self.environment}
        command = os.path.basename(argv[0])
        try:
            returncode, out, err = await run_bounded(argv, environment, timeout, cwd="/")
        except OSError as exc:
            raise CommandNotRun(f"cannot run {command}: {exc}") from exc
        except TimeoutError as exc:
            raise CommandNotRun(f"{command} did not answer within {timeout:.0f}s") from exc
        return {"returncode": returncode, "stdout": text(out), "stderr": text(err)}


class CommandNotRun(Exception):
    """A command that could not be run at all (the transport's error)."""


def _export(found: list[tuple[str, Path]], destination: Path) -> list[list[str]]:
    exported = []
    for relative, source in found:
        target = destination / relative
        if not workdir.inside(str(destination), str(target)):
            raise WorkdirError(f"{relative!r} escapes the export directory")
        _directories(destination, target.parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with open(source, "rb") as reader, os.fdopen(fd, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1024 * 1024)
        os.chmod(target, 0o644)
        exported.append([relative, str(target)])
    return exported


def _directories(destination: Path, directory: Path) -> None:
    """`directory` and its missing parents below `destination`, each traversable by the sidecar
    (0711: the agent's umask is 077, and the sidecar reads the exported files by path)."""
    missing = []
    while directory != destination and not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)  # never a link put there meanwhile
        try:
            os.fchmod(fd, 0o711)
        finally:
            os.close(fd)


def error_of(exc: BaseException) -> tuple[str, str]:
    """The wire's error kind and message for what a handler raised."""
    if isinstance(exc, Refused):
        return "refused", str(exc)
    if isinstance(exc, workdir.DirectoryTaken):
        return "taken", str(exc)
    if isinstance(exc, WorkdirError):
        return "workdir", str(exc)
    if isinstance(exc, CommandNotRun):
        return "transport", str(exc)
    if isinstance(exc, OSError):
        return "os", str(exc)
    if isinstance(exc, wire.WireError | KeyError | ValueError | TypeError):
        return "refused", f"malformed request: {exc}"
    return "internal", f"{type(exc).__name__}: {exc}"


async def answer(agent: Agent, request: wire.Request, writer: asyncio.StreamWriter) -> None:
    handler = agent.handlers.get(request.op)
    if handler is None:
        reply = wire.Answer(request.id, error_kind="unknown-op", error=f"unknown op {request.op!r}")
    else:
        try:
            reply = wire.Answer(request.id, ok=await handler(request.args))
        except Exception as exc:  # every failure is an answer; the agent lives on
            kind, message = error_of(exc)
            if kind == "internal":
                log.exception("agent of %s: %s failed", agent.account, request.op)
            reply = wire.Answer(request.id, error_kind=kind, error=message)
    writer.write(wire.answer_line(reply))
    await writer.drain()


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=wire.MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    agent = Agent()
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        try:
            request = wire.parse_request(line)
        except wire.WireError as exc:
            log.error("agent of %s: unreadable request, stopping: %s", agent.account, exc)
            break
        task = asyncio.create_task(answer(agent, request, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)


def on_pipes() -> bool:
    """Whether stdin and stdout are pipes or sockets: what the sidecar gives its agents, and the
    only kind asyncio's pipe transports take (a terminal or /dev/null would hang or fail late)."""
    modes = (os.fstat(fd).st_mode for fd in (0, 1))
    return all(stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) for mode in modes)


def run() -> int:
    """The `site agent` command: serve until stdin closes."""
    if not on_pipes():
        print(
            "interlink-provider site agent: the sidecar starts this with pipes on stdin and stdout; not for humans",
            file=sys.stderr,
        )
        return 2
    logsetup.configure()
    os.umask(0o077)
    asyncio.run(serve())
    return 0
