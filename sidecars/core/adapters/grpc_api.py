"""The gRPC API (proto/offloader/v1) beside the REST one, on the same service core.

TLS always (a server certificate; client certificates too when `client_ca` is set),
a bearer token on every call (`authorization` metadata, validated and mapped exactly
as for REST), limits on message size and concurrent calls. grpc.health.v1 and
server reflection are served. Errors carry the gRPC code and the reason that
interlink_provider.refusals gives them, the REST API's reason word for word.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from interlink_provider import __version__
from interlink_provider.auth.errors import Expired as TokenExpired
from interlink_provider.auth.mapping import Operation
from interlink_provider.pods.phase import phase_of
from interlink_provider.pods.wire import ContainerLogOpts, LogStruct, RetrievedPodData
from interlink_provider.refusals import answer
from interlink_provider.rpc.convert import container_status
from interlink_provider.rpc.offloader.v1 import offloader_pb2 as pb
from interlink_provider.rpc.offloader.v1 import offloader_pb2_grpc as pb_grpc
from interlink_provider.telemetry import tracing
from sidecars.core.adapters.authn import Authenticator, Caller
from sidecars.core.adapters.settings import GrpcConfig
from sidecars.core.domain.errors import BadRequest
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.service import SiteService
from sidecars.core.kits.deadline import DeadlinePassed, until

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Offloader"].full_name


class OffloaderServicer(pb_grpc.OffloaderServicer):
    def __init__(self, service: SiteService, authenticator: Authenticator) -> None:
        self.service = service
        self.auth = authenticator

    async def _caller(self, context: grpc.aio.ServicerContext, operation: Operation) -> Caller:
        metadata = dict(context.invocation_metadata() or ())
        async with _mapped_errors(context, "call", "a caller"):
            caller = await self.auth.caller(metadata.get("authorization"), via_unix_socket=False)
        async with _mapped_errors(context, operation, caller.principal.key):
            self.auth.require(caller, operation)
        return caller

    async def CreatePod(self, request: pb.CreatePodRequest, context: grpc.aio.ServicerContext) -> pb.CreatePodResponse:
        principal = (await self._caller(context, "create")).principal
        async with _mapped_errors(context, "CreatePod", principal.key):
            try:
                body = json.loads(request.pod_json.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BadRequest(f"pod_json is not JSON: {exc}") from exc
            if isinstance(body, list) and len(body) == 1:
                body = body[0]
            if not isinstance(body, dict):
                raise BadRequest("pod_json must be a RetrievedPodData object")
            result = await self.service.create(RetrievedPodData.model_validate(body), principal)
        return pb.CreatePodResponse(uid=result.uid, job_id=result.job_id, created=result.created)

    async def DeletePod(self, request: pb.DeletePodRequest, context: grpc.aio.ServicerContext) -> pb.DeletePodResponse:
        principal = (await self._caller(context, "cancel")).principal
        async with _mapped_errors(context, "DeletePod", principal.key):
            if not request.uid:
                raise BadRequest("uid is missing")
            outcome = await self.service.delete(request.uid, principal)
        return pb.DeletePodResponse(outcome=outcome)

    async def GetStatus(self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext) -> pb.GetStatusResponse:
        principal = (await self._caller(context, "read")).principal
        async with _mapped_errors(context, "GetStatus", principal.key):
            uids = list(request.uids) or [r.uid for r in self.service.readable(principal)]
            await self.service.claim_rebuilt_uids(list(request.uids), principal)
            answers = self.service.statuses(uids, principal)
        return pb.GetStatusResponse(pods=[self._pod_status(a) for a in answers])

    async def WatchStatus(
        self, request: pb.WatchStatusRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StatusEvent]:
        caller = await self._caller(context, "read")
        async with _mapped_errors(context, "WatchStatus", caller.principal.key):
            with self.service.streams.hold(caller.principal):
                async for event in _while_token_lasts(caller, self._watch(request, caller.principal), "watch"):
                    yield event

    async def _watch(self, request: pb.WatchStatusRequest, principal: Principal) -> AsyncIterator[pb.StatusEvent]:
        """Every change of the principal's pods since its (epoch, revision), heartbeats in silence."""
        feed = self.service.feed
        heartbeat = min(max(request.heartbeat_seconds or 15, 1), 300)
        position = request.since_revision if request.epoch == feed.epoch else 0
        epoch = feed.epoch
        quiet_since = time.monotonic()  # the last event sent: a heartbeat follows `heartbeat` s of silence
        while True:
            if feed.epoch != epoch:  # the feed forgot its tombstones: every live pod again
                epoch, position = feed.epoch, 0
            current = feed.revision
            for revision, uid in feed.since(position, principal.key):
                record = self.service.record(uid)
                if record is None:
                    yield pb.StatusEvent(epoch=feed.epoch, revision=revision, removed_uid=uid)
                else:
                    yield pb.StatusEvent(
                        epoch=feed.epoch, revision=revision, pod=self._pod_status(self.service.pod_status(record))
                    )
                quiet_since = time.monotonic()
            position = max(position, current)  # others' changes are behind us too
            # Others' pods may change all the time: silence is measured for this watcher only.
            silence = heartbeat - (time.monotonic() - quiet_since)
            if silence <= 0 or not await feed.wait(position, silence):
                yield pb.StatusEvent(epoch=feed.epoch, revision=position, heartbeat=True)
                quiet_since = time.monotonic()

    def _pod_status(self, answer: dict[str, Any]) -> pb.PodStatus:
        record = self.service.record(answer["UID"])
        return pb.PodStatus(
            uid=answer["UID"],
            namespace=answer["namespace"],
            name=answer["name"],
            job_id=answer.get("JID") or "",
            phase=record.phase if record and record.phase else phase_of(answer),
            message=record.message if record else "",
            init_containers=[container_status(c) for c in answer.get("initContainers") or []],
            containers=[container_status(c) for c in answer.get("containers") or []],
        )

    async def GetLogs(
        self, request: pb.GetLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LogChunk]:
        caller = await self._caller(context, "read")
        async with _mapped_errors(context, "GetLogs", caller.principal.key):
            if request.tail_lines and request.limit_bytes:
                raise BadRequest("both tail_lines and limit_bytes set: set only one of them")
            if request.since_seconds and request.HasField("since_time"):
                raise BadRequest("both since_seconds and since_time set: set only one of them")
            since = request.since_time.ToDatetime(tzinfo=UTC) if request.HasField("since_time") else None
            query = LogStruct(
                PodUID=request.uid,
                ContainerName=request.container,
                Opts=ContainerLogOpts(
                    Tail=request.tail_lines,
                    Bytes=request.limit_bytes,
                    SinceSeconds=request.since_seconds,
                    SinceTime=since,
                    Timestamps=request.timestamps,
                    Follow=request.follow,
                    Previous=request.previous,
                ),
            )
            chunks = aiter(self.service.logs(query, caller.principal))
            if request.follow:
                with self.service.streams.hold(caller.principal):
                    async for chunk in _while_token_lasts(caller, chunks, "follow"):
                        yield pb.LogChunk(data=chunk)
            else:
                async for chunk in chunks:
                    yield pb.LogChunk(data=chunk)

    async def Ping(self, request: pb.PingRequest, context: grpc.aio.ServicerContext) -> pb.NodeInfo:
        caller = await self._caller(context, "read")
        async with _mapped_errors(context, "Ping", caller.principal.key):
            ping = await self.service.ping()
        resources = ping.resources
        return pb.NodeInfo(
            site=self.service.config.site_name,
            version=__version__,
            status=ping.status or "ok",
            capacity=pb.Resources(cpu=resources.cpu or "", memory=resources.memory or "", pods=resources.pods or "")
            if resources
            else None,
            accelerators=[
                pb.Accelerator(resource_type=a.resourceType, available=int(a.available))
                for a in (resources.accelerators or [] if resources else [])
            ],
            taints=[pb.Taint(key=t.key, value=t.value or "", effect=t.effect) for t in ping.taints or []],
        )


class TracedCalls(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type information
    """A server span per Offloader call, continuing the caller's trace from the metadata
    (`traceparent`, `interlink-http-session`). WatchStatus, endless by design, is not traced."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = details.method.rsplit("/", 1)[-1]
        if handler is None or not details.method.startswith(f"/{SERVICE_NAME}/") or method == "WatchStatus":
            return handler
        headers = {k: v for k, v in details.invocation_metadata or () if isinstance(v, str)}
        name = f"sidecar {method}"
        if handler.unary_unary is not None:
            call = handler.unary_unary

            async def unary(request: Message, context: grpc.aio.ServicerContext) -> Message:
                with tracing.server_span(name, headers):
                    return await call(request, context)

            return handler._replace(unary_unary=unary)
        stream_call = handler.unary_stream

        async def stream(request: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
            span = tracing.start_server_span(name, headers)  # not made current: it spans many yields
            span.set_attribute(tracing.POD_UID, getattr(request, "uid", ""))
            try:
                async for item in stream_call(request, context):
                    yield item
            finally:
                span.end()

        return handler._replace(unary_stream=stream)


async def _while_token_lasts(caller: Caller, items: AsyncIterator[T], what: str) -> AsyncIterator[T]:
    """A stream's `items` until the caller's token expires, then UNAUTHENTICATED: the client
    opens the `what` again with a fresh token."""
    try:
        async for item in until(caller.expires_at, items):
            yield item
    except DeadlinePassed:
        raise TokenExpired(f"the token expired during the {what}: {what} again with a fresh token") from None


class _mapped_errors:
    """Refusals as their gRPC code and reason (interlink_provider.refusals), each logged once at
    INFO (`what` was refused to `who`; never a token); the rest is UNKNOWN."""

    def __init__(self, context: grpc.aio.ServicerContext, what: str, who: str) -> None:
        self.context = context
        self.what = what
        self.who = who

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        refused = answer(exc) if exc is not None else None
        if refused is not None:
            log.info("refused gRPC %s from %s: %s %s", self.what, self.who, refused.grpc, refused.message)
            await self.context.abort(grpc.StatusCode[refused.grpc], refused.message)  # raises
        return False


def server_credentials(config: GrpcConfig) -> grpc.ServerCredentials:
    """TLS from the configured files; client certificates required when a client CA is set."""
    key, cert = Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes()
    client_ca = Path(config.client_ca).read_bytes() if config.client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def start_server(config: GrpcConfig, service: SiteService, authenticator: Authenticator) -> grpc.aio.Server:
    """Listen on config.host:port with TLS; returns the started server."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            # gRPC binds with SO_REUSEPORT by default: a second sidecar given the same port
            # would silently take half the gateway's connections. Refuse to share it.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        interceptors=[TracedCalls()],
    )
    # protoc's gRPC plugin writes no annotations (and no .pyi) for the service module
    pb_grpc.add_OffloaderServicer_to_server(OffloaderServicer(service, authenticator), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    credentials = server_credentials(config)
    address = f"{config.host}:{config.port}"
    try:
        bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # newer grpcio raises where older ones returned 0
        raise OSError(f"cannot listen for gRPC on {address}: {exc} (is another process using the port?)") from exc
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address} (is another process using the port?)")
    await server.start()
    log.info("gRPC (offloader.v1, TLS%s) on %s", " + client certificates" if config.client_ca else "", address)
    return server
