"""Every Prometheus metric the daemons export, in one place (deploy/grafana/ charts these names).

Each daemon is its own scrape target, so the sidecar and the gateway share names where they
measure the same thing (`ilp_pods`, `ilp_request_seconds`, `ilp_token_requests_total`).
Labels hold small closed sets (operation, phase, site, command, outcome, reason): never a pod
name or UID, which would grow the series without bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

# Pods and requests (both daemons).
PODS = Gauge("ilp_pods", "Pods known, by site and phase", ["site", "phase"])
REQUEST_SECONDS = Histogram(
    "ilp_request_seconds",
    "Latency of create/delete/status/logs requests",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
CREATES = Counter("ilp_creates_total", "Create requests by outcome", ["outcome"])
DELETES = Counter("ilp_deletes_total", "Delete requests")

# The scheduler (sidecar).
COMMANDS = Counter("ilp_scheduler_commands_total", "Scheduler commands run on the site", ["command", "outcome"])
COMMAND_SECONDS = Histogram("ilp_scheduler_command_seconds", "Wall time of scheduler commands", ["command"])
THROTTLED = Counter("ilp_scheduler_throttled_seconds_total", "Time scheduler commands waited for the site's rate limit")
CYCLE_SECONDS = Histogram("ilp_status_cycle_seconds", "Wall time of a status cycle")
CYCLE_COMMANDS = Gauge("ilp_status_cycle_scheduler_commands", "Scheduler commands in the last status cycle")
TRACKED = Gauge("ilp_tracked_jobs", "Jobs followed by the last status cycle")

# Gangs (sidecar): members held until their gang is complete, then one job.
GANG_MEMBERS_WAITING = Gauge("ilp_gang_members_waiting", "Gang members held until their gang is complete")
GANG_WAIT_SECONDS = Histogram(
    "ilp_gang_wait_seconds",
    "From a gang's first member's create to the gang's submission",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 14400, float("inf")),
)

# Data staging (sidecar).
STAGED_BYTES = Counter("ilp_staged_bytes_total", "Bytes staged", ["direction"])
STAGED_FILES = Counter("ilp_staged_files_total", "Files staged", ["direction"])
STAGING = Gauge("ilp_staging_pods", "Pods staging now", ["direction"])
STAGE_THROUGHPUT = Histogram(
    "ilp_stage_throughput_bytes_per_second",
    "Throughput of each pod's stage-in or stage-out",
    ["direction"],
    buckets=(1e4, 1e5, 1e6, 1e7, 5e7, 1e8, 5e8, 1e9, 5e9),
)
DOWNLOADS = Counter("ilp_stage_downloads_total", "Files downloaded by stage-in")
CACHE_HITS = Counter("ilp_stage_cache_hits_total", "Staged files served by the content cache")

# Tokens (both daemons).
TOKEN_REQUESTS = Counter(
    "ilp_token_requests_total", "Requests to the IdP's token endpoint, by grant and outcome", ["grant", "outcome"]
)
TOKEN_FAILURES = Counter(
    "ilp_token_validation_failures_total", "Bearer tokens refused by the sidecar's validator, by reason", ["reason"]
)
AUTH_REFUSED = Counter("ilp_auth_refused_total", "Requests refused by authentication or authorization", ["code"])

# The gateway's links to its sites.
SITE_UP = Gauge("ilp_site_up", "1 while the site's status stream is up", ["site"])
STREAM_RECONNECTS = Counter("ilp_grpc_stream_reconnects_total", "Status streams re-opened after a cut", ["site"])


@contextmanager
def timed(operation: str) -> Iterator[None]:
    """Observe the wrapped block in REQUEST_SECONDS, with outcome `error` when it raised."""
    started = time.monotonic()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        REQUEST_SECONDS.labels(operation, outcome).observe(time.monotonic() - started)
