"""The status page's HTML: user-controlled text (reasons, scheduler messages) is escaped, health
failures are marked, and only the rows it is given are shown."""

from __future__ import annotations

from types import SimpleNamespace

from sidecars.core import statuspage
from sidecars.core.service import Principal
from sidecars.core.store import PodRecord


def site(records: list[PodRecord], poll_error: str = "") -> SimpleNamespace:
    """The parts of SiteService the page reads (a data holder, not a stand-in for a component)."""
    return SimpleNamespace(owned=lambda principal: records, staging=None, poll_error=poll_error,
                           backend=SimpleNamespace(display_name="Slurm"),
                           config=SimpleNamespace(site_name="unit"))


def test_reasons_are_escaped_and_failures_marked():
    record = PodRecord(uid="u1", namespace="ns", name="p", owner="alice@iss", job_id="42", phase="Failed",
                       stage="finished", message="<script>alert(1)</script> & more", pod_dir="/p", job_name="j",
                       summary={})
    html = statuspage.render(site([record], poll_error="squeue: timed out"), Principal("alice@iss"),
                             {"https://idp": (False, "cannot reach https://idp/.well-known")})
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert html.count('class="bad"') == 2 and "squeue: timed out" in html and "cannot reach" in html
    assert 'id="pod-u1"' in html and ">42<" in html and "1 Failed" in html


def test_no_pods_says_so():
    html = statuspage.render(site([]), Principal("bob@iss"), {})
    assert 'id="no-pods"' in html and 'id="pods"' not in html and 'class="bad"' not in html
