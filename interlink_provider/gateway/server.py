"""The interLink API as the upstream Virtual Kubelet speaks it, served by the gateway.

`/create` (PodCreateRequests), `/delete` (v1.Pod), `/status` ([]v1.Pod), `/getLogs`
(LogStruct), `/pinglink`, `/updateCache`, whatever the method (the Go client sends
GET with bodies). Each pod goes to one site (routing.py) over gRPC with a token for
that site; `/status` is answered from the sites' pushed statuses, without a call.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import signal
import time
from typing import Any

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from interlink_provider import logsetup, sdnotify
from interlink_provider.listeners import CannotListen, opening, server_tls, tcp_site, unix_site

from ..auth.errors import AuthError
from ..pods.gang import gang_key
from ..pods.k8s import Pod
from ..pods.quantity import count, cpu_millis, memory_bytes
from ..pods.retrieve import from_create_request
from ..pods.wire import (
    CreateStruct,
    LogStruct,
    PingResponse,
    PodCreateRequests,
)
from ..refusals import BadRequest, NotFound, NoTokenForSite, answer, site_answer
from ..rpc.client import bearer
from ..rpc.convert import pod_status_json
from ..rpc.offloader.v1 import offloader_pb2 as pb
from ..telemetry import tracing
from ..telemetry.metrics import PODS, REQUEST_SECONDS, SITE_UP
from .access import TOKEN_KEY, SharedToken, token_required
from .config import GatewayConfig
from .identities import IdentityProblem, IdentityUnusable, UserGrants, take_identity
from .routing import SiteState, choose_site
from .sites import ServiceTokens, Site

log = logging.getLogger(__name__)
# A site answering these surely did not create the pod (unlike a lost answer): no grant to keep.
_REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
_OPERATIONS = {"/create": "create", "/delete": "delete", "/status": "status", "/getLogs": "logs"}
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
GANGS_REMEMBERED = 10_000  # gangs whose site the gateway remembers (routing.py: then their hash)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.tokens = ServiceTokens(config.identity)
        policy = config.identities
        self.grants = UserGrants(self.tokens.client, " ".join(policy.user_scopes), policy.grants_file, policy.idle_days)
        self.sites = {link.name: Site(link, self.tokens, config.heartbeat_seconds) for link in config.sites}
        # Where the latest gangs' members went ("namespace/name"), so the rest follow (routing.py).
        self.gang_sites: collections.OrderedDict[str, str] = collections.OrderedDict()

    def start(self) -> None:
        for site in self.sites.values():
            site.start()

    async def stop(self) -> None:
        await asyncio.gather(*(site.stop() for site in self.sites.values()))
        await self.tokens.close()

    def site_of(self, uid: str) -> Site | None:
        return next((s for s in self.sites.values() if uid in s.pods), None)

    async def metadata_for(self, site: Site, uid: str) -> tuple[tuple[str, str], ...]:
        """Calls about a pod are made as its owner when it runs as them; as the gateway otherwise, or
        when the owner's grant is gone (the site lets the gateway act on pods it submitted)."""
        try:
            token = await self.grants.token_for(uid, site.link.audience)
        except IdentityProblem as exc:
            log.warning("pod %s: acting as the gateway itself: %s", uid, exc.message)
            token = None
        return bearer(token) if token else await site.metadata()

    async def create_metadata(self, request: dict[str, Any], site: Site) -> tuple[tuple[str, str], ...]:
        """The identity a new pod runs under: the gateway's, or (namespaces in `user` mode) its owner's."""
        metadata = request["pod"]["metadata"]
        namespace, annotations = metadata.get("namespace", ""), metadata.get("annotations") or {}
        policy = self.config.identities
        if policy.mode_for(namespace) == "service":
            return await site.metadata()
        secret_name = annotations.get(policy.secret_annotation)
        if not secret_name:
            raise IdentityUnusable(
                f"pods of namespace {namespace} run under their owner's identity: annotate "
                f"the pod with {policy.secret_annotation} naming the Secret with your token "
                "(`interlink-provider token login` writes one)",
                "IdentityMissing",
            )
        credential = take_identity(request, secret_name)
        return bearer(await self.grants.enroll(metadata.get("uid", ""), credential, site.link.audience))

    def route(self, pod: dict[str, Any]) -> Site:
        states = {name: SiteState(site.up, site.free_pods) for name, site in self.sites.items()}
        gang = gang_key(pod)
        link = choose_site(
            pod, self.config.sites, states, self.config.site_annotation, gang, self.gang_sites.get(gang, "")
        )
        return self.sites[link.name]

    def routed(self, pod: dict[str, Any], site: Site) -> None:
        """The pod is the site's now: its gang's later members go there too."""
        gang = gang_key(pod)
        if gang:
            self.gang_sites[gang] = site.name
            self.gang_sites.move_to_end(gang)
            while len(self.gang_sites) > GANGS_REMEMBERED:  # older gangs are whole by now
                self.gang_sites.popitem(last=False)


GATEWAY_KEY = web.AppKey("gateway", Gateway)


def carried(request: web.Request) -> tuple[tuple[str, str], ...]:
    """Metadata handing the trace and the interLink session on to the site."""
    return tracing.outgoing(tracing.session_of(request.headers))


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message.rstrip() + "\n", content_type="text/plain")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    return json.loads(raw.decode("utf-8"))


@web.middleware
async def observed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every interLink call traced (continuing the VK's session) and timed by operation."""
    operation = _OPERATIONS.get(request.path)
    if operation is None:
        return await handler(request)
    started = time.monotonic()
    with tracing.server_span(f"gateway {request.path}", request.headers) as span:
        response = await handler(request)  # `errors` (inside) made every failure an answer
        span.set_attribute("http.response.status_code", response.status)
    outcome = "ok" if response.status < 400 else "error"
    REQUEST_SECONDS.labels(operation, outcome).observe(time.monotonic() - started)
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals (interlink_provider.refusals) and the sites' gRPC codes as HTTP answers to the VK."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except grpc.aio.AioRpcError as exc:
        return _text(*site_answer(exc.code().name, exc.details()))
    except Exception as exc:
        if isinstance(exc, AuthError):  # the VK sends no token: this is one the gateway asked for, for a site
            exc = NoTokenForSite(exc.message)
        refused = answer(exc)
        if refused is None:
            raise
        return _text(refused.http, refused.message)


async def create(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a PodCreateRequests object")
    PodCreateRequests.model_validate(body)  # refuse malformed requests here, with the field
    site = gateway.route(body["pod"])
    uid = body["pod"]["metadata"].get("uid", "")
    tracing.annotate({tracing.POD_UID: uid, "ilp.site": site.name})
    metadata = await gateway.create_metadata(body, site)  # may take the identity Secret out of `body`
    retrieved = from_create_request(body)
    try:
        answer = await site.stub.CreatePod(
            pb.CreatePodRequest(pod_json=json.dumps(retrieved).encode()),
            metadata=(*metadata, *carried(request)),
            timeout=120,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _REFUSALS:
            gateway.grants.forget(uid)
        raise
    log.info(
        "pod %s/%s -> site %s (job %s)",
        body["pod"]["metadata"].get("namespace"),
        body["pod"]["metadata"].get("name"),
        site.name,
        answer.job_id or "staging",
    )
    gateway.routed(body["pod"], site)
    # The pod is the site's now: remember where it went until its status arrives.
    site.pods.setdefault(
        answer.uid,
        pb.PodStatus(
            uid=answer.uid,
            job_id=answer.job_id,
            phase="Pending",
            name=body["pod"]["metadata"].get("name", ""),
            namespace=body["pod"]["metadata"].get("namespace", ""),
        ),
    )
    return web.json_response(CreateStruct(PodUID=answer.uid, PodJID=answer.job_id).model_dump())


async def delete(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    pod = Pod.model_validate(await _body(request))
    uid = pod.metadata.uid or ""
    site = gateway.site_of(uid)
    tracing.annotate({tracing.POD_UID: uid, "ilp.site": site.name if site else ""})
    if site is None:
        return _text(200, f"pod {pod.metadata.namespace}/{pod.metadata.name}: not found")
    metadata = (*await gateway.metadata_for(site, uid), *carried(request))
    answer = await site.stub.DeletePod(pb.DeletePodRequest(uid=uid), metadata=metadata, timeout=60)
    gateway.grants.forget(uid)
    return _text(200, f"pod {pod.metadata.namespace}/{pod.metadata.name}: {answer.outcome} (site {site.name})")


async def status(request: web.Request) -> web.Response:
    """From the pushed statuses: unknown UIDs are left out, as interLink expects."""
    gateway = request.app[GATEWAY_KEY]
    body = await _body(request) or []
    if not isinstance(body, list):
        raise BadRequest("the body must be a list of v1.Pod objects")
    answers = []
    for item in body:
        uid = ((item or {}).get("metadata") or {}).get("uid", "")
        site = gateway.site_of(uid)
        if site is not None:
            answers.append(pod_status_json(site.pods[uid]))
    return web.json_response(answers)


async def get_logs(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY_KEY]
    query = LogStruct.model_validate(await _body(request))
    site = gateway.site_of(query.PodUID)
    tracing.annotate({tracing.POD_UID: query.PodUID, "ilp.site": site.name if site else ""})
    if site is None:
        raise NotFound(f"pod {query.PodUID} is not known to any site")
    opts = query.Opts
    ask = pb.GetLogsRequest(
        uid=query.PodUID,
        container=query.ContainerName,
        tail_lines=opts.Tail,
        limit_bytes=opts.Bytes,
        since_seconds=opts.SinceSeconds,
        timestamps=opts.Timestamps,
        follow=opts.Follow,
        previous=opts.Previous,
    )
    if opts.SinceTime is not None:
        ask.since_time.FromDatetime(opts.SinceTime)
    stream = site.stub.GetLogs(ask, metadata=(*await gateway.metadata_for(site, query.PodUID), *carried(request)))
    first = await stream.read()  # errors (unknown pod, bad options) become a status code, not a broken body
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    try:
        while first is not grpc.aio.EOF:
            await response.write(first.data)
            first = await stream.read()
    except (ConnectionResetError, ConnectionError):
        stream.cancel()
        return response
    await response.write_eof()
    return response


async def pinglink(request: web.Request) -> web.Response:
    """Every site's NodeInfo summed into one PingResponse (the virtual node's capacity)."""
    gateway = request.app[GATEWAY_KEY]
    await asyncio.gather(*(s.refresh_node() for s in gateway.sites.values() if s.up))
    nodes = [s.node for s in gateway.sites.values() if s.up and s.node is not None]
    if not nodes:
        reasons = "; ".join(f"{s.name}: {s.error}" for s in gateway.sites.values())
        return _text(503, f"no site is reachable ({reasons})")
    return web.json_response(aggregate(nodes).model_dump(exclude_none=True))


def aggregate(nodes: list[pb.NodeInfo]) -> PingResponse:
    cpu = sum(cpu_millis(n.capacity.cpu or "0") for n in nodes)
    memory = sum(memory_bytes(n.capacity.memory or "0") for n in nodes)
    pods = sum(count(n.capacity.pods or "0") for n in nodes)
    gpus: dict[str, int] = {}
    for node in nodes:
        for accelerator in node.accelerators:
            gpus[accelerator.resource_type] = gpus.get(accelerator.resource_type, 0) + accelerator.available
    taints = {(t.key, t.value, t.effect) for n in nodes for t in n.taints}
    return PingResponse.model_validate(
        {
            "status": "ok",
            "resources": {
                "cpu": f"{cpu // 1000}" if cpu % 1000 == 0 else f"{cpu}m",
                "memory": f"{memory // (1024 * 1024)}Mi",
                "pods": str(pods),
                "accelerators": [{"resourceType": k, "available": str(v)} for k, v in sorted(gpus.items())] or None,
            },
            "taints": [{"key": k, "value": v or None, "effect": e} for k, v, e in sorted(taints)] or None,
        }
    )


async def update_cache(request: web.Request) -> web.Response:
    return _text(200, "ok: statuses are pushed by the sites, there is no cache to drop")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition; pods per site and phase are counted now, from the pushed statuses."""
    for site in request.app[GATEWAY_KEY].sites.values():
        phases = [pod.phase for pod in site.pods.values()]  # the last known, as /status answers
        for phase in PHASES:
            PODS.labels(site.name, phase).set(phases.count(phase))
        SITE_UP.labels(site.name).set(1 if site.up else 0)
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY_KEY]
    lines = [f"{s.name}: {'up' if s.up else 'down: ' + s.error}" for s in gateway.sites.values()]
    return _text(200 if any(s.up for s in gateway.sites.values()) else 503, "\n".join(lines))


def make_app(gateway: Gateway, token: SharedToken | None = None) -> web.Application:
    app = web.Application(
        client_max_size=gateway.config.listen.max_body_bytes, middlewares=[token_required, observed, errors]
    )
    app[GATEWAY_KEY] = gateway
    if token is not None:
        app[TOKEN_KEY] = token
    for path, handler in (
        ("/create", create),
        ("/delete", delete),
        ("/status", status),
        ("/getLogs", get_logs),
        ("/pinglink", pinglink),
        ("/updateCache", update_cache),
        ("/healthz", healthz),
        ("/metrics", metrics),
    ):
        app.router.add_route("*", path, handler)
    return app


async def serve(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    listen = config.listen
    # What a TCP listener needs is checked before anything starts: a bad file ends the gateway in one line.
    token = SharedToken(listen.token_file) if listen.token_file and listen.host else None
    with opening():
        tls = server_tls(listen.tls_cert, listen.tls_key, listen.client_ca)
    gateway = Gateway(config)
    gateway.start()
    runner = web.AppRunner(make_app(gateway, token), access_log=None)
    await runner.setup()
    try:
        addresses = []
        with opening():
            if listen.socket:
                addresses.append(await unix_site(runner, listen.socket, listen.socket_mode))
            if listen.host and listen.port:
                addresses.append(await tcp_site(runner, listen.host, listen.port, tls))
        protection = [name for name, on in (("client certificates", listen.client_ca), ("bearer token", token)) if on]
        log.info(
            "gateway serving the interLink API on %s for sites %s%s",
            ", ".join(addresses),
            ", ".join(gateway.sites),
            f" (TCP requires: {' and '.join(protection)})" if protection and listen.host else "",
        )
        pinging = sdnotify.ready(f"sites {', '.join(gateway.sites)}")
        await stop.wait()
        await sdnotify.stopping(pinging)
    finally:
        await runner.cleanup()
        await gateway.stop()


def run(config: GatewayConfig) -> None:
    logsetup.configure()
    tracing.configure("interlink-provider-gateway")
    try:
        asyncio.run(serve(config))
    except CannotListen as exc:
        log.error("gateway cannot start: %s", exc)
        raise SystemExit(1) from None
    finally:
        tracing.shutdown()
