"""OpenTelemetry traces across gateway -> sidecar -> scheduler and staging.

Nothing is exported unless the standard OTEL_* variables ask for it
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
`OTEL_TRACES_EXPORTER=otlp|console`); spans then go out by OTLP from a background thread
(BatchSpanProcessor), never blocking the event loop: over HTTP (`http/protobuf`, the
default, port 4318) or gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`, port 4317), as a
Collector takes them. Without them the API's no-op tracer costs next to nothing.

One pod can be followed end to end: the context travels as W3C `traceparent` (HTTP
headers, gRPC metadata), and every span about a pod carries `k8s.pod.uid`; the
interLink `InterLink-Http-Session` header (e.g. `CreatePod#12345`) is kept as
`interlink.http_session` and handed on to the site.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context as Context  # re-exported: what remember() hands back

if TYPE_CHECKING:  # the SDK is imported only once tracing is configured
    from opentelemetry.sdk.trace.export import SpanExporter

SESSION_HEADER = "InterLink-Http-Session"
SESSION_ATTRIBUTE = "interlink.http_session"
POD_UID = "k8s.pod.uid"
TRACER = trace.get_tracer("interlink_provider")

_configured = False
PROTOCOLS = ("http/protobuf", "grpc")


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something we cannot export with."""


def otlp_protocol() -> str:
    """The OTLP protocol the standard variables choose (traces-specific first)."""
    protocol = (
        (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        .strip()
        .lower()
    )
    if protocol not in PROTOCOLS:
        raise TracingConfigError(f"OTLP protocol {protocol!r} is not supported: use one of {', '.join(PROTOCOLS)}")
    return protocol


def otlp_exporter() -> SpanExporter:
    """The OTLP span exporter for the chosen protocol; endpoint, headers, TLS (`..._CERTIFICATE`,
    `..._INSECURE`) and timeout come from the OTEL_EXPORTER_OTLP_* variables, read by the exporter."""
    if otlp_protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def configure(service_name: str) -> bool:
    """Install an exporting TracerProvider when the environment names an exporter. True if it did.
    Raises TracingConfigError (before installing anything) for a protocol we cannot speak."""
    global _configured
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if _configured or exporter_name == "none" or not (endpoint or exporter_name in ("otlp", "console")):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter = ConsoleSpanExporter() if exporter_name == "console" else otlp_exporter()
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def shutdown() -> None:
    """Flush the spans still queued (daemons call it on their way out)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def session_of(headers: Mapping[str, str]) -> str:
    return headers.get(SESSION_HEADER) or headers.get(SESSION_HEADER.lower()) or ""


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, parent: Context | None = None) -> Iterator[trace.Span]:
    """A span, child of the current one (or of `parent`, a context remembered earlier)."""
    with TRACER.start_as_current_span(name, context=parent, attributes=dict(attributes or {})) as current:
        yield current


def start_server_span(name: str, headers: Mapping[str, str]) -> trace.Span:
    """The span of a request we serve: continues the caller's trace (traceparent) and keeps the
    interLink session, so the next hop can be given both. The caller ends it."""
    session = session_of(headers)
    return TRACER.start_span(
        name,
        context=propagate.extract(headers),
        kind=trace.SpanKind.SERVER,
        attributes={SESSION_ATTRIBUTE: session} if session else {},
    )


@contextmanager
def server_span(name: str, headers: Mapping[str, str]) -> Iterator[trace.Span]:
    """start_server_span as the current span of the block."""
    with trace.use_span(start_server_span(name, headers), end_on_exit=True) as current:
        yield current


def outgoing(session: str = "") -> tuple[tuple[str, str], ...]:
    """gRPC metadata (or HTTP headers) that carry the current trace and the interLink session on."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if session:
        carrier[SESSION_HEADER.lower()] = session
    return tuple(carrier.items())


def annotate(attributes: Mapping[str, Any]) -> None:
    """Facts learnt mid-request (the pod UID, the site chosen) on the current span."""
    current = trace.get_current_span()
    for key, value in attributes.items():
        if value not in (None, ""):
            current.set_attribute(key, value)


def failed(reason: str, message: str) -> None:
    """The current span's work failed without raising (the pod carries the failure instead)."""
    current = trace.get_current_span()
    current.set_attribute("ilp.failure.reason", reason)
    current.set_status(trace.Status(trace.StatusCode.ERROR, message))


def remember() -> Context:
    """The current context, for work that continues later in another task (queued submissions)."""
    return context.get_current()
