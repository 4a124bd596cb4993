"""What observability costs: the status page at 10,000 pods, the spans of one pod's create
path (no exporter vs the SDK batching to an exporter), and a /metrics scrape.

In-process (no site needed); figures are printed, never asserted:
    .venv/bin/python bench/bench_telemetry.py [--pods 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import generate_latest

from interlink_provider.telemetry import tracing
from interlink_provider.telemetry.metrics import COMMANDS, PODS, REQUEST_SECONDS, timed
from sidecars.core.adapters import statuspage
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.records import PodRecord, PodSummary, Stage


class Dropped(SpanExporter):
    """An exporter that drops what it gets: the SDK's own cost, without a network."""

    def export(self, spans):
        return SpanExportResult.SUCCESS


def median_ms(work, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def status_page(pods: int) -> None:
    phases = ("Pending", "Running", "Succeeded", "Failed")
    records = [
        PodRecord(
            uid=f"uid-{i:08d}",
            namespace="bench",
            name=f"pod-{i}",
            owner="alice@https://idp/",
            job_id=str(1000 + i),
            phase=phases[i % 4],
            stage=Stage.SUBMITTED,
            created_at=float(i),
            message=f"Slurm job {1000 + i} is pending: Resources: waiting for nodes",
            pod_dir="/p",
            job_name="j",
            summary=PodSummary(containers=()),
        )
        for i in range(pods)
    ]
    site = SimpleNamespace(
        readable=lambda principal: records,
        staging_progress=lambda uid: "",
        poll_error="",
        scheduler_name="Slurm",
        config=SimpleNamespace(site_name="bench"),
    )
    html = statuspage.render(site, Principal("alice@https://idp/"), {"https://idp/": (True, "3 keys")})
    took = median_ms(lambda: statuspage.render(site, Principal("alice@https://idp/"), {}), 20)
    print(
        f"status page, {pods} pods ({statuspage.MAX_ROWS} listed): {took:.1f} ms per render, "
        f"{len(html) / 1024:.0f} KiB of HTML"
    )


def create_path(iterations: int) -> float:
    """The spans and timing one create makes at the sidecar, per pod, in microseconds."""
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "InterLink-Http-Session": "CreatePod#1",
    }

    def one() -> None:
        with tracing.server_span("sidecar CreatePod", headers), timed("bench"):
            with tracing.span("sidecar create", {tracing.POD_UID: "u"}):
                context = tracing.remember()
        with tracing.span("submit", {tracing.POD_UID: "u"}, parent=context):
            with tracing.span("scheduler sbatch", {"ilp.scheduler.command": "sbatch"}):
                pass

    started = time.perf_counter()
    for _ in range(iterations):
        one()
    return (time.perf_counter() - started) / iterations * 1e6


def scrape() -> None:
    for site in ("a", "b", "c"):
        for phase in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            PODS.labels(site, phase).set(100)
    for command in ("sbatch", "squeue", "sacct", "scancel", "sinfo"):
        COMMANDS.labels(command, "ok").inc()
    for operation in ("create", "delete", "status", "logs"):
        REQUEST_SECONDS.labels(operation, "ok").observe(0.01)
    size = len(generate_latest())
    print(f"/metrics scrape: {median_ms(generate_latest, 200):.2f} ms, {size / 1024:.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--spans", type=int, default=20_000, help="create paths timed")
    args = parser.parse_args()
    status_page(args.pods)
    scrape()
    quiet = create_path(args.spans)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped(), max_queue_size=65536))
    trace.set_tracer_provider(provider)
    exported = create_path(args.spans)
    provider.shutdown()
    print(
        f"one create's spans (5) and timing: {quiet:.1f} us without an exporter, "
        f"{exported:.1f} us with the SDK batching to an exporter"
    )


if __name__ == "__main__":
    main()
