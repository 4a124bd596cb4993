"""The sidecar's read-only status page (`/ui`): the caller's pods and the health of what they
depend on, for a human in a browser.

Plain server-rendered HTML (Jinja2 with autoescaping: pod names, reasons and scheduler
messages are user-controlled), refreshed by the browser every few seconds; no JavaScript.
It shows what the API would show the same caller: authentication and ownership are the
API's, so the page needs the same bearer token (or the trusted unix socket).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from interlink_provider import __version__
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.records import PodRecord
from sidecars.core.domain.service import SiteService

REFRESH_SECONDS = 5
MAX_ROWS = 500  # the newest pods; the phase counts still cover all of them
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True)
class PodRow:
    namespace: str
    name: str
    uid: str
    phase: str
    stage: str
    job_id: str
    owner: str
    account: str
    staging: str
    reason: str
    updated: str


@dataclass(frozen=True)
class Health:
    what: str
    ok: bool
    detail: str


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch else ""


def pod_rows(service: SiteService, records: list[PodRecord]) -> list[PodRow]:
    return [
        PodRow(
            namespace=r.namespace,
            name=r.name,
            uid=r.uid,
            phase=r.phase,
            stage=r.stage,
            job_id=r.job_id,
            owner=r.owner,
            account=r.account or "(the sidecar's own)",
            staging=service.staging_progress(r.uid),
            reason=r.state_reason(),
            updated=_when(r.updated_at),
        )
        for r in records
    ]


def health(service: SiteService, issuers: dict[str, tuple[bool, str]]) -> list[Health]:
    """What the page can tell without calling anyone: the last status poll and the key caches."""
    scheduler = service.scheduler_name
    checks = [Health(f"{scheduler} (status poll)", not service.poll_error, service.poll_error or "answering")]
    checks += [Health(f"IdP {issuer}", ok, detail) for issuer, (ok, detail) in sorted(issuers.items())]
    return checks


def render(service: SiteService, principal: Principal, issuers: dict[str, tuple[bool, str]]) -> str:
    records = service.readable(principal)
    phases: dict[str, int] = {}
    for record in records:
        phases[record.phase] = phases.get(record.phase, 0) + 1
    newest = heapq.nlargest(MAX_ROWS, records, key=lambda r: r.created_at)
    return _TEMPLATES.get_template("status.html.j2").render(
        site=service.config.site_name,
        version=__version__,
        viewer=principal.key,
        admin=principal.site_admin,
        rows=pod_rows(service, newest),
        total=len(records),
        phases=phases,
        health=health(service, issuers),
        refresh=REFRESH_SECONDS,
        now=_when(time.time()),
    )
