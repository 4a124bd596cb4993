"""The status page's HTML: user-controlled text (reasons, scheduler messages) is escaped, health
failures are marked, and only the rows it is given are shown."""

from __future__ import annotations

from types import SimpleNamespace

from sidecars.core.adapters import statuspage
from sidecars.core.domain.principal import Principal
from sidecars.core.domain.records import PodRecord, PodSummary, Stage


def site(records: list[PodRecord], poll_error: str = "") -> SimpleNamespace:
    """The parts of SiteService the page reads (a data holder, not a stand-in for a component)."""
    return SimpleNamespace(
        readable=lambda principal: records,
        staging_progress=lambda uid: "",
        poll_error=poll_error,
        scheduler_name="Slurm",
        config=SimpleNamespace(site_name="unit"),
    )


def test_reasons_are_escaped_and_failures_marked():
    record = PodRecord(
        uid="u1",
        namespace="ns",
        name="p",
        owner="alice@iss",
        job_id="42",
        phase="Failed",
        stage=Stage.FINISHED,
        message="<script>alert(1)</script> & more",
        pod_dir="/p",
        job_name="j",
        summary=PodSummary(containers=()),
    )
    html = statuspage.render(
        site([record], poll_error="squeue: timed out"),
        Principal("alice@iss"),
        {"https://idp": (False, "cannot reach https://idp/.well-known")},
    )
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert html.count('class="bad"') == 2 and "squeue: timed out" in html and "cannot reach" in html
    assert 'id="pod-u1"' in html and ">42<" in html and "1 Failed" in html


def test_no_pods_says_so():
    html = statuspage.render(site([]), Principal("bob@iss"), {})
    assert 'id="no-pods"' in html and 'id="pods"' not in html and 'class="bad"' not in html
    assert "No pods of yours" in html and "site admin" not in html
    admin = statuspage.render(site([]), Principal("root@iss", site_admin=True), {})
    assert "(site admin: every pod)" in admin and "No pods on this site." in admin


def test_a_long_list_shows_the_newest_rows_and_counts_all(monkeypatch):
    monkeypatch.setattr(statuspage, "MAX_ROWS", 3)
    records = [
        PodRecord(
            uid=f"u{i}",
            namespace="ns",
            name=f"p{i}",
            owner="a",
            job_id=str(i),
            phase="Running" if i % 2 else "Pending",
            stage="submitted",
            created_at=float(i),
            pod_dir="/p",
            job_name="j",
            summary=PodSummary(containers=()),
        )
        for i in range(10)
    ]
    html = statuspage.render(site(records), Principal("a"), {})
    assert [f'id="pod-u{i}"' in html for i in range(10)] == [False] * 7 + [True] * 3
    assert "Pods (10; 5 Pending; 5 Running)" in html and "the newest 3 of 10 are listed" in html
