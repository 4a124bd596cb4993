"""`interlink-provider pod ...`: run manifests through a sidecar as the Virtual Kubelet would."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.table import Table

from ..auth import discovery
from ..auth.errors import AuthError
from ..pods import manifest
from ..pods.phase import FAILED, SUCCEEDED, phase_of
from .client import UNANSWERED, PodListing, SidecarClient, SidecarError, address_argument, default_address, pod_ref
from .exits import Exit, Refusal, one_line

err = Console(stderr=True, highlight=False, soft_wrap=True)
TERMINAL = (SUCCEEDED, FAILED)


@dataclass
class Tracked:
    """A pod we created, and what we last saw of it."""

    pod: dict[str, Any]
    uid: str
    job: manifest.JobTemplate | None = None
    index: int | None = None  # its completion index (an Indexed Job's pod)
    attempt: int = 1
    phase: str = "Pending"
    summary: str = ""
    status: dict[str, Any] = field(default_factory=dict)
    following: set[str] = field(default_factory=set)
    retried: bool = False  # a Job pod that failed and was replaced by a new attempt

    @property
    def name(self) -> str:
        return cast(str, self.pod["metadata"]["name"])  # the manifest's JSON: create_request() named it

    @property
    def namespace(self) -> str:
        return cast(str, self.pod["metadata"]["namespace"])


def _token(args: argparse.Namespace) -> str | None:
    """The WLCG-discovered bearer token, if any (--no-token: none)."""
    if getattr(args, "no_token", False):
        return None
    try:
        return discovery.discover().token
    except AuthError:
        return None


def _client(args: argparse.Namespace, address: str | None, speaks_vk: bool = False) -> SidecarClient:
    try:
        return SidecarClient(
            address,
            token=_token(args),
            speaks_vk=speaks_vk,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
        )
    except OSError as exc:  # a CA, certificate or key file that cannot be read (ssl.SSLError is one)
        raise Refusal(f"--ca-file, --cert-file or --key-file: {one_line(exc)}") from exc


def describe(status: dict[str, Any]) -> str:
    parts = []
    for item in [*(status.get("initContainers") or []), *(status.get("containers") or [])]:
        state = item.get("state") or {}
        if "running" in state:
            parts.append(f"{item['name']}: Running")
        elif "terminated" in state:
            t = state["terminated"]
            parts.append(f"{item['name']}: {t.get('reason', 'Terminated')} ({t.get('exitCode')})")
        elif "waiting" in state:
            parts.append(f"{item['name']}: {state['waiting'].get('reason', 'Waiting')}")
    return ", ".join(parts)


async def _create(
    client: SidecarClient,
    pod: dict[str, Any],
    m: manifest.Manifests,
    namespace: str,
    job: manifest.JobTemplate | None = None,
    index: int | None = None,
    attempt: int = 1,
) -> Tracked:
    if client.speaks_vk:  # a gateway: the Virtual Kubelet's side of the interLink API
        request = manifest.vk_create_request(pod, m, namespace=namespace)
    else:  # a sidecar: the interLink API server's side
        request = manifest.create_request(pod, m, namespace=namespace)
    answer = await client.create(request)
    created = request["pod"]
    err.print(
        f"[bold]created[/] {created['metadata']['namespace']}/{created['metadata']['name']} "
        f"uid {answer['PodUID']} job {answer['PodJID'] or '(pending)'}"
    )
    return Tracked(pod=created, uid=answer["PodUID"], job=job, index=index, attempt=attempt)


async def _follow(client: SidecarClient, tracked: Tracked, container: str) -> None:
    query = {
        "Namespace": tracked.namespace,
        "PodUID": tracked.uid,
        "PodName": tracked.name,
        "ContainerName": container,
        "Opts": {"Follow": True},
    }
    prefix = f"[{tracked.name}/{container}] "
    pending = b""
    async for chunk in client.logs(query):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            sys.stdout.write(prefix + line.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()
    if pending:
        sys.stdout.write(prefix + pending.decode("utf-8", "replace") + "\n")


def _started_containers(status: dict[str, Any]) -> list[str]:
    names = []
    for item in [*(status.get("initContainers") or []), *(status.get("containers") or [])]:
        state = item.get("state") or {}
        if "running" in state or ("terminated" in state and state["terminated"].get("startedAt")):
            names.append(item["name"])
    return names


async def _print_logs(client: SidecarClient, tracked: Tracked) -> None:
    names = [
        c["name"] for c in [*(tracked.status.get("initContainers") or []), *(tracked.status.get("containers") or [])]
    ]
    for name in names:
        query = {
            "Namespace": tracked.namespace,
            "PodUID": tracked.uid,
            "PodName": tracked.name,
            "ContainerName": name,
            "Opts": {},
        }
        try:
            text = await client.logs_text(query)
        except SidecarError as exc:
            text = f"(no logs: {exc.message})\n"
        err.print(f"[bold]--- {tracked.namespace}/{tracked.name} {name}[/]")
        sys.stdout.write(text)
        sys.stdout.flush()


async def run(args: argparse.Namespace) -> int:
    try:
        m = manifest.load(Path(args.file).read_text(), args.namespace)
    except (OSError, ValueError, manifest.ManifestError) as exc:  # ValueError: not UTF-8
        raise Refusal(f"{args.file}: {one_line(exc)}") from exc
    if not m.pods and not m.jobs:
        raise Refusal(f"{args.file}: the manifest has no Pod or Job")
    address = args.gateway or args.sidecar
    async with _client(args, address, speaks_vk=bool(args.gateway)) as client:
        tracked: list[Tracked] = []
        followers: list[asyncio.Task[None]] = []
        try:
            for pod in m.pods:
                tracked.append(await _create(client, pod, m, args.namespace))
            for job in m.jobs:
                for index in job.indexes():
                    tracked.append(await _create(client, job.make_pod(index), m, args.namespace, job, index))
        except manifest.ManifestError as exc:
            raise Refusal(f"{args.file}: {exc}") from exc
        deadline = time.monotonic() + args.timeout if args.timeout else None
        while True:
            answers = await client.status([pod_ref(t.uid, t.name, t.namespace) for t in tracked])
            by_uid = {a["UID"]: a for a in answers}
            for t in list(tracked):
                answer = by_uid.get(t.uid)
                if answer is None:
                    continue
                t.status = answer
                phase, summary = phase_of(answer), describe(answer)
                if (phase, summary) != (t.phase, t.summary):
                    err.print(f"{t.namespace}/{t.name}: [bold]{phase}[/] {summary}")
                    t.phase, t.summary = phase, summary
                if args.follow:
                    for name in _started_containers(answer):
                        if name not in t.following:
                            t.following.add(name)
                            followers.append(asyncio.create_task(_follow(client, t, name)))
                if t.job and t.phase == FAILED and t.attempt <= t.job.backoff_limit and not t.retried:
                    t.retried = True
                    which = "" if t.index is None else f" index {t.index}"
                    err.print(f"job {t.job.name}{which}: attempt {t.attempt} failed, retrying")
                    again = t.job.make_pod(t.index)
                    tracked.append(await _create(client, again, m, args.namespace, t.job, t.index, t.attempt + 1))
            settled = [t for t in tracked if not t.retried]
            wanted = ("Running", *TERMINAL) if args.until == "running" else TERMINAL
            if all(t.phase in wanted for t in settled):
                break
            if deadline and time.monotonic() > deadline:
                raise Refusal(f"timed out after {args.timeout:g} s: the pods are left as they are", Exit.TIMEOUT)
            await asyncio.sleep(args.interval)
        if followers:
            await asyncio.wait(followers, timeout=30)
        elif not args.quiet:
            for t in tracked:
                await _print_logs(client, t)
        if args.rm:
            for t in tracked:
                await client.delete(t.pod)
        results = [t.phase for t in settled]
        err.print("result: " + ", ".join(f"{t.name} {t.phase}" for t in settled))
        return Exit.BAD if FAILED in results else Exit.OK


async def _find(client: SidecarClient, name: str, namespace: str | None) -> PodListing:
    pods = await client.pods()
    matches = [p for p in pods if name in (p["uid"], p["name"]) and (namespace is None or p["namespace"] == namespace)]
    if not matches:
        raise SidecarError(404, f"no pod named {name}" + (f" in namespace {namespace}" if namespace else ""))
    return max(matches, key=lambda p: p["created_at"])


async def status_cmd(args: argparse.Namespace) -> int:
    async with _client(args, args.sidecar) as client:
        pod = await _find(client, args.pod, args.namespace)
        answers = await client.status([pod_ref(pod["uid"], pod["name"], pod["namespace"])])
        for answer in answers:
            err.print(
                f"{pod['namespace']}/{pod['name']} uid {pod['uid']} job {pod['job_id'] or '-'}: "
                f"[bold]{phase_of(answer)}[/] {describe(answer)}"
            )
            if pod["message"]:
                err.print(f"  {pod['message']}")
        return Exit.OK


async def logs_cmd(args: argparse.Namespace) -> int:
    async with _client(args, args.sidecar) as client:
        pod = await _find(client, args.pod, args.namespace)
        query = {
            "Namespace": pod["namespace"],
            "PodUID": pod["uid"],
            "PodName": pod["name"],
            "ContainerName": args.container or "",
            "Opts": {
                "Follow": args.follow,
                "Tail": args.tail or 0,
                "Timestamps": args.timestamps,
                "SinceSeconds": args.since or 0,
                "Previous": args.previous,
            },
        }
        async for chunk in client.logs(query):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return Exit.OK


async def delete_cmd(args: argparse.Namespace) -> int:
    async with _client(args, args.sidecar) as client:
        pod = await _find(client, args.pod, args.namespace)
        print(await client.delete(pod_ref(pod["uid"], pod["name"], pod["namespace"])), end="")
        return Exit.OK


async def list_cmd(args: argparse.Namespace) -> int:
    async with _client(args, args.sidecar) as client:
        pods = await client.pods()
        table = Table("NAMESPACE", "NAME", "PHASE", "JOB", "STAGE", "AGE", "UID")
        now = time.time()
        for p in sorted(pods, key=lambda p: p["created_at"]):
            table.add_row(
                p["namespace"],
                p["name"],
                p["phase"],
                p["job_id"] or "-",
                p["stage"],
                f"{int(now - p['created_at'])}s",
                p["uid"],
            )
        Console().print(table)
        return Exit.OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pod = sub.add_parser(
        "pod",
        help="run and inspect pods through a sidecar, as the Virtual Kubelet would",
        description="Run and inspect pods through a sidecar's interLink API, as the Virtual "
        "Kubelet would; `run` may go through a gateway instead.",
    )
    pod.set_defaults(func=main)
    pod.add_argument(
        "--sidecar",
        type=address_argument,
        help="unix:///path.sock, http://host:port or https://host:port (default: $ILP_SIDECAR)",
    )
    pod.add_argument(
        "--gateway",
        type=address_argument,
        help="run through a gateway instead (unix:///path.sock, or its TCP listener): the pods are sent as "
        "the Virtual Kubelet sends them; `run` only",
    )
    pod.add_argument("--ca-file", help="CA of an https:// address's certificate (default: $ILP_SIDECAR_CA, system CAs)")
    pod.add_argument("--cert-file", help="client certificate, for a listener that requires one (mTLS)")
    pod.add_argument("--key-file", help="private key of --cert-file")
    pod.add_argument("-n", "--namespace", default=None)
    pod.add_argument(
        "--no-token", action="store_true", help="send no bearer token (default: the one WLCG discovery finds, if any)"
    )
    actions = pod.add_subparsers(dest="action", required=True)

    run_p = actions.add_parser(
        "run",
        help="create the pods (and Jobs) of a manifest and wait for them",
        description="Create the pods and Jobs of a manifest, report their phases until "
        "they finish (or run, with --until running) and print their logs. Exits 1 if a pod "
        "failed, 3 if the sidecar or gateway does not answer, 124 on timeout.",
    )
    run_p.add_argument("file")
    run_p.add_argument("-f", "--follow", action="store_true", help="stream container logs")
    run_p.add_argument("--timeout", type=float, default=0, help="seconds; 0 waits forever")
    run_p.add_argument("--until", choices=("done", "running"), default="done")
    run_p.add_argument("--interval", type=float, default=1.0, help="seconds between status polls")
    run_p.add_argument("--rm", action="store_true", help="delete the pods at the end")
    run_p.add_argument("-q", "--quiet", action="store_true", help="do not print logs at the end")
    run_p.set_defaults(handler=run)

    for name, handler, help_text, description in (
        (
            "status",
            status_cmd,
            "a pod's phase and container states",
            "Show a pod's phase, job id and container states (the newest pod of that name).",
        ),
        (
            "delete",
            delete_cmd,
            "delete a pod (runs preStop hooks, cancels its job)",
            "Delete a pod: its preStop hooks run, then its job is cancelled.",
        ),
    ):
        p = actions.add_parser(name, help=help_text, description=description)
        p.add_argument("pod", help="pod name or UID")
        p.set_defaults(handler=handler)

    logs_p = actions.add_parser(
        "logs", help="a container's logs", description="Print a container's logs, like kubectl logs."
    )
    logs_p.add_argument("pod", help="pod name or UID")
    logs_p.add_argument("-c", "--container")
    logs_p.add_argument("-f", "--follow", action="store_true")
    logs_p.add_argument("--tail", type=int)
    logs_p.add_argument("--since", type=int, help="seconds")
    logs_p.add_argument("--timestamps", action="store_true")
    logs_p.add_argument("-p", "--previous", action="store_true")
    logs_p.set_defaults(handler=logs_cmd)

    list_p = actions.add_parser(
        "list",
        help="pods known to the sidecar",
        description="List the pods the sidecar knows (those the caller may see), oldest "
        "first: phase, job id, stage, age and UID.",
    )
    list_p.set_defaults(handler=list_cmd)


def main(args: argparse.Namespace) -> int:
    if args.action == "run" and args.namespace is None:
        args.namespace = "default"
    if args.gateway and args.action != "run":
        raise Refusal("only `pod run` goes through a gateway; ask the site's sidecar for the rest")
    handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.handler  # set_defaults(handler=...)
    try:
        return asyncio.run(handler(args))
    except SidecarError as exc:  # answered, and refused: no such pod, not allowed, a pod it rejects
        raise Refusal(str(exc), Exit.BAD) from exc
    except UNANSWERED as exc:
        server = "the gateway" if args.gateway else "the sidecar"
        address = args.gateway or args.sidecar or default_address()
        raise Refusal(f"cannot reach {server} at {address}: {one_line(exc)}", Exit.UNREACHABLE) from exc
