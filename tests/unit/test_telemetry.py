"""The telemetry helpers: a trace handed on through headers/metadata is continued with the
interLink session kept, and request timing records the outcome."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from interlink_provider.telemetry import tracing
from interlink_provider.telemetry.metrics import timed

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider():
    sdk = TracerProvider()
    sdk.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(sdk)  # once per process: the unit tests share it
    yield


@pytest.fixture(autouse=True)
def clear():
    EXPORTER.clear()


def test_a_trace_handed_on_is_continued_with_its_session():
    with tracing.server_span("gateway /create", {"InterLink-Http-Session": "CreatePod#7"}):
        tracing.annotate({tracing.POD_UID: "u-1", "empty": ""})
        carried = dict(tracing.outgoing("CreatePod#7"))
    assert set(carried) == {"traceparent", "interlink-http-session"}
    with tracing.server_span("sidecar CreatePod", carried):
        with tracing.span("sidecar create", {tracing.POD_UID: "u-1"}):
            remembered = tracing.remember()
    with tracing.span("submit", parent=remembered):  # later, in another task
        pass
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    gateway, served, create, submit = (
        spans[n] for n in ("gateway /create", "sidecar CreatePod", "sidecar create", "submit")
    )
    assert len({s.context.trace_id for s in spans.values()}) == 1
    assert served.parent.span_id == gateway.context.span_id and submit.parent.span_id == create.context.span_id
    assert gateway.attributes[tracing.POD_UID] == "u-1" and "empty" not in gateway.attributes
    assert served.attributes[tracing.SESSION_ATTRIBUTE] == "CreatePod#7"
    assert served.kind == trace.SpanKind.SERVER


def test_a_request_without_trace_headers_starts_a_new_trace():
    with tracing.server_span("sidecar /create", {}):
        pass
    [span] = EXPORTER.get_finished_spans()
    assert span.parent is None and tracing.SESSION_ATTRIBUTE not in span.attributes


def test_timed_records_the_outcome():
    def count(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value("ilp_request_seconds_count", {"operation": "unit-test", "outcome": outcome})
            or 0.0
        )

    ok, error = count("ok"), count("error")
    with timed("unit-test"):
        pass
    with pytest.raises(ValueError), timed("unit-test"):
        raise ValueError("boom")
    assert (count("ok") - ok, count("error") - error) == (1, 1)


def test_nothing_is_exported_unless_the_environment_asks(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure("unit") is False
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert tracing.configure("unit") is False


def test_the_otlp_protocol_picks_the_exporter(monkeypatch):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(tracing.otlp_exporter(), HttpExporter)  # the default, http/protobuf
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://127.0.0.1:1")
    exporter = tracing.otlp_exporter()
    assert isinstance(exporter, GrpcExporter)
    exporter.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")  # the traces' own setting wins
    assert isinstance(tracing.otlp_exporter(), HttpExporter)


def test_an_unsupported_otlp_protocol_stops_the_daemon_with_a_reason(monkeypatch, capsys):
    from interlink_provider.cli.main import main

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(
        tracing.TracingConfigError, match="'http/json' is not supported: use one of http/protobuf, grpc"
    ):
        tracing.configure("unit")
    assert not tracing._configured  # nothing was installed
    example = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"
    assert main(["gateway", "--config", str(example)]) == 2  # refused before it serves anything
    assert "OTLP protocol 'http/json' is not supported" in capsys.readouterr().err
