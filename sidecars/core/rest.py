"""The interLink plugin REST API: the exact protocol the upstream interLink API server speaks.

Paths are routed whatever the method (the Go server ignores methods and sends GET
with bodies). Bad input gets a 4xx with a reason a human can act on; only our own
bugs give 500. Also served: /pods (listing, our extension), /healthz, /metrics.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from interlink_provider.pods import PodRejected
from interlink_provider.pods.k8s import Pod
from interlink_provider.pods.wire import CreateStruct, LogStruct, RetrievedPodData

from .reconciler import Reconciler
from .service import BadRequest, NotFound, SiteService, Unavailable

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("service", SiteService)
RECONCILER_KEY = web.AppKey("reconciler", Reconciler)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message.rstrip() + "\n", content_type="text/plain")


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "invalid request: " + "; ".join(parts)


@web.middleware
async def errors(request: web.Request, handler) -> web.StreamResponse:
    """Map what the service core raises to HTTP answers."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except json.JSONDecodeError as exc:
        return _text(400, f"invalid JSON: {exc}")
    except UnicodeDecodeError:
        return _text(400, "the request body is not UTF-8")
    except ValidationError as exc:
        return _text(422, _validation_message(exc))
    except PodRejected as exc:
        return _text(422, f"pod rejected: {exc}")
    except BadRequest as exc:
        return _text(400, str(exc))
    except NotFound as exc:
        return _text(404, str(exc))
    except Unavailable as exc:
        return _text(503, str(exc))


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


def _model(model: type[BaseModel], value: Any) -> Any:
    return model.model_validate(value)


async def create(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _json(request)
    if isinstance(body, list):  # interLink before 0.5 sent a list of RetrievedPodData
        answers = []
        for item in body:
            result = await service.create(_model(RetrievedPodData, item))
            answers.append(CreateStruct(PodUID=result.uid, PodJID=result.job_id).model_dump())
        return web.json_response(answers)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a RetrievedPodData object (or a list of them)")
    result = await service.create(_model(RetrievedPodData, body))
    return web.json_response(CreateStruct(PodUID=result.uid, PodJID=result.job_id).model_dump())


async def delete(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    pod = _model(Pod, await _json_object(request, "v1.Pod"))
    if not pod.metadata.uid:
        raise BadRequest("metadata.uid is missing")
    outcome = await service.delete(pod.metadata.uid)
    return _text(200, f"pod {pod.metadata.namespace}/{pod.metadata.name}: {outcome}")


async def status(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    body = await _json(request)
    if body is None:
        body = []
    if not isinstance(body, list):
        raise BadRequest("the body must be a list of v1.Pod objects")
    if not body:  # the ping: the node's resources
        ping = await service.ping()
        return web.json_response(ping.model_dump(exclude_none=True))
    pods = [_model(Pod, item) for item in body]
    return web.json_response(service.statuses([p.metadata.uid for p in pods]))


async def get_logs(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    query = _model(LogStruct, await _json_object(request, "LogStruct"))
    if query.Opts.Tail and query.Opts.Bytes:
        raise BadRequest("Both Tail and LimitBytes set. Set only one of them")
    if query.Opts.SinceSeconds and query.Opts.SinceTime is not None:
        raise BadRequest("Both SinceSeconds and SinceTime set. Set only one of them")
    chunks = service.logs(query)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except (ConnectionResetError, ConnectionError):
        return response  # the reader went away: stop following
    await response.write_eof()
    return response


async def list_pods(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
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
        for r in service.pods.values()
    ]
    return web.json_response(pods)


async def system_info(request: web.Request) -> web.Response:
    """The interLink Slurm plugin's diagnostic endpoint, kept for compatibility."""
    service = request.app[SERVICE_KEY]
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


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(service: SiteService, reconciler: Reconciler, max_body_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[errors])
    app[SERVICE_KEY] = service
    app[RECONCILER_KEY] = reconciler
    for path, handler in (
        ("/create", create),
        ("/delete", delete),
        ("/status", status),
        ("/getLogs", get_logs),
        ("/pods", list_pods),
        ("/system-info", system_info),
        ("/healthz", healthz),
        ("/metrics", metrics),
    ):
        app.router.add_route("*", path, handler)
    return app
