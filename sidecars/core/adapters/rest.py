"""The interLink plugin REST API: the exact protocol the upstream interLink API server speaks.

Paths are routed whatever the method (the Go server ignores methods and sends GET
with bodies). Bad input gets a 4xx with a reason a human can act on; only our own
bugs give 500. Also served: /pods (listing, our extension), /healthz, /metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from interlink_provider.auth.errors import AuthError
from interlink_provider.auth.mapping import Operation
from interlink_provider.pods.k8s import Pod
from interlink_provider.pods.wire import CreateStruct, LogStruct, RetrievedPodData
from interlink_provider.refusals import answer
from interlink_provider.telemetry import tracing
from sidecars.core.adapters import statuspage
from sidecars.core.adapters.authn import Authenticator, Caller
from sidecars.core.domain.errors import BadRequest, Unavailable
from sidecars.core.domain.reconciler import Reconciler
from sidecars.core.domain.service import SiteService
from sidecars.core.kits.deadline import DeadlinePassed, until

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("service", SiteService)
RECONCILER_KEY = web.AppKey("reconciler", Reconciler)
AUTH_KEY = web.AppKey("authenticator", Authenticator)
CALLER = "caller"
PUBLIC_PATHS = {"/healthz", "/metrics"}
M = TypeVar("M", bound=BaseModel)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message.rstrip() + "\n", content_type="text/plain")


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer refusals with their HTTP status and reason (interlink_provider.refusals), each logged
    once at INFO (never a token); the rest is a 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        refused = answer(exc)
        if refused is None:
            raise
        caller = request.get(CALLER)
        who = caller.principal.key if caller is not None else "a caller"
        log.info("refused %s %s from %s: %d %s", request.method, request.path, who, refused.http, refused.message)
        response = _text(refused.http, refused.message)
        if refused.http == 401:  # RFC 6750: the challenge, with the reason word
            code = refused.refusal.code if isinstance(refused.refusal, AuthError) else AuthError.code
            response.headers["WWW-Authenticate"] = f'Bearer error="{code}"'
        return response


def _via_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str)


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A server span per API call, continuing the caller's trace and interLink session."""
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    with tracing.server_span(f"sidecar {request.path}", request.headers) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        return response


def _open_to_all(request: web.Request) -> bool:
    """/healthz answers anyone; /metrics anyone on the unix socket (guarded by its mode) and, on
    TCP, callers with a valid token (Prometheus: `authorization.credentials_file`)."""
    return request.path == "/healthz" or (request.path == "/metrics" and _via_unix_socket(request))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _open_to_all(request):
        caller = await request.app[AUTH_KEY].caller(request.headers.get("Authorization"), _via_unix_socket(request))
        request[CALLER] = caller
    return await handler(request)


def _caller(request: web.Request, operation: Operation) -> Caller:
    caller: Caller = request[CALLER]
    request.app[AUTH_KEY].require(caller, operation)
    return caller


async def _json(request: web.Request) -> Any:
    body = await request.read()  # raises 413 beyond client_max_size
    if not body.strip():
        raise BadRequest("the request body is empty")
    return json.loads(body.decode("utf-8"))


async def _json_object(request: web.Request, what: str) -> dict[str, Any]:
    body = await _json(request)
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a {what} object")
    return body


def _model(model: type[M], value: Any) -> M:
    return model.model_validate(value)


async def create(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    principal = _caller(request, "create").principal
    body = await _json(request)
    if isinstance(body, list):  # interLink before 0.5 sent a list of RetrievedPodData
        answers = []
        for item in body:
            result = await service.create(_model(RetrievedPodData, item), principal)
            answers.append(CreateStruct(PodUID=result.uid, PodJID=result.job_id).model_dump())
        return web.json_response(answers)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a RetrievedPodData object (or a list of them)")
    result = await service.create(_model(RetrievedPodData, body), principal)
    return web.json_response(CreateStruct(PodUID=result.uid, PodJID=result.job_id).model_dump())


async def delete(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    principal = _caller(request, "cancel").principal
    pod = _model(Pod, await _json_object(request, "v1.Pod"))
    if not pod.metadata.uid:
        raise BadRequest("metadata.uid is missing")
    outcome = await service.delete(pod.metadata.uid, principal)
    return _text(200, f"pod {pod.metadata.namespace}/{pod.metadata.name}: {outcome}")


async def status(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    principal = _caller(request, "read").principal
    body = await _json(request)
    if body is None:
        body = []
    if not isinstance(body, list):
        raise BadRequest("the body must be a list of v1.Pod objects")
    if not body:  # the ping: the node's resources
        ping = await service.ping()
        return web.json_response(ping.model_dump(exclude_none=True))
    pods = [_model(Pod, item) for item in body]
    await service.claim_rebuilt(pods, principal)
    return web.json_response(service.statuses([p.metadata.uid for p in pods], principal))


async def get_logs(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    caller = _caller(request, "read")
    query = _model(LogStruct, await _json_object(request, "LogStruct"))
    if query.Opts.Tail and query.Opts.Bytes:
        raise BadRequest("Both Tail and LimitBytes set. Set only one of them")
    if query.Opts.SinceSeconds and query.Opts.SinceTime is not None:
        raise BadRequest("Both SinceSeconds and SinceTime set. Set only one of them")
    if not query.Opts.Follow:
        return await _send_logs(request, aiter(service.logs(query, caller.principal)))
    with service.streams.hold(caller.principal):  # a follow lives long: the identity's share, its token's life
        chunks = until(caller.expires_at, aiter(service.logs(query, caller.principal)))
        return await _send_logs(request, chunks)


async def _send_logs(request: web.Request, chunks: AsyncIterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        first = await anext(chunks, b"")  # a failure to read is still an HTTP status, not a cut body
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    except (ConnectionResetError, ConnectionError):
        return response  # the reader went away: stop following
    except DeadlinePassed:
        log.info("ended a log follow of %s: its token expired", request[CALLER].principal.key)
        if not response.prepared:
            await response.prepare(request)
        return response  # the body ends: the caller follows again with a fresh token
    await response.write_eof()
    return response


async def list_pods(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    principal = _caller(request, "read").principal
    pods = [
        {
            "uid": r.uid,
            "namespace": r.namespace,
            "name": r.name,
            "job_id": r.job_id,
            "phase": r.phase,
            "stage": r.stage,
            "message": r.message,
            "created_at": r.created_at,
        }
        for r in service.readable(principal)
    ]
    return web.json_response(pods)


async def whoami(request: web.Request) -> web.Response:
    """How this site sees the caller: identity, account, allowed operations."""
    caller: Caller = request[CALLER]
    authenticator = request.app[AUTH_KEY]
    identity = caller.identity
    allowed = {}
    for operation in ("create", "read", "cancel"):
        try:
            authenticator.require(caller, operation)
            allowed[operation] = True
        except AuthError:
            allowed[operation] = False
    return web.json_response(
        {
            "owner": caller.principal.key,
            "account": caller.principal.account or "(the sidecar's own)",
            "site_admin": caller.principal.site_admin,
            "issuer": identity.issuer if identity else None,
            "subject": identity.subject if identity else None,
            "actor": identity.actor if identity else None,
            "groups": list(identity.groups) if identity else [],
            "scopes": [str(s) for s in identity.scopes] if identity else [],
            "allowed": allowed,
        }
    )


async def system_info(request: web.Request) -> web.Response:
    """The interLink Slurm plugin's diagnostic endpoint, kept for compatibility."""
    service = request.app[SERVICE_KEY]
    _caller(request, "read")
    try:
        capacity = await service.capacity()
        return web.json_response({"status": "ok", "slurm_connected": True, "capacity": capacity.__dict__})
    except Unavailable as exc:
        return web.json_response({"status": "error", "slurm_connected": False, "error": str(exc)}, status=503)


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    if service.poll_error:
        return _text(503, f"scheduler unreachable: {service.poll_error}")
    return _text(200, "ok")


async def status_page(request: web.Request) -> web.Response:
    """The read-only HTML page: the caller's pods, the scheduler's and IdPs' health."""
    principal = _caller(request, "read").principal
    issuers = request.app[AUTH_KEY].validator.keys.state()
    html = statuspage.render(request.app[SERVICE_KEY], principal, issuers)
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def metrics(request: web.Request) -> web.Response:
    if CALLER in request:  # over TCP
        _caller(request, "read")
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(
    service: SiteService, reconciler: Reconciler, authenticator: Authenticator, max_body_bytes: int
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[traced, errors, authenticate])
    app[SERVICE_KEY] = service
    app[RECONCILER_KEY] = reconciler
    app[AUTH_KEY] = authenticator
    for path, handler in (
        ("/create", create),
        ("/delete", delete),
        ("/status", status),
        ("/getLogs", get_logs),
        ("/pods", list_pods),
        ("/whoami", whoami),
        ("/system-info", system_info),
        ("/healthz", healthz),
        ("/metrics", metrics),
        ("/ui", status_page),
    ):
        app.router.add_route("*", path, handler)
    return app
