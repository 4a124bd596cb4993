"""Daemon log lines: JSON with the pod's facts as fields, and never a credential."""

from __future__ import annotations

import json
import logging

from interlink_provider.logsetup import REDACTED, JsonFormatter, TextFormatter, redact

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXBhcnQ"


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("sidecar", logging.INFO, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_credentials_are_redacted_wherever_they_appear():
    for text in (
        f"token {JWT} refused",
        "Authorization: Bearer opaque-123",
        "refresh_token=abc.def&x=1",
        '{"client_secret": "s3cr3t"}',
        "password: hunter2",
    ):
        cleaned = redact(text)
        assert REDACTED in cleaned and not any(
            s in cleaned for s in (JWT, "opaque-123", "abc.def", "s3cr3t", "hunter2")
        )
    assert redact("pod ns/x: submitted, Pending (job 12)") == "pod ns/x: submitted, Pending (job 12)"


def test_a_json_line_carries_the_pod_fields_and_no_token():
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        import sys

        failure = sys.exc_info()
    line = JsonFormatter().format(
        record(
            "pod %s/%s: %s",
            "ns",
            "p",
            "finished",
            exc_info=failure,
            pod_uid="u-1",
            job_id="42",
            site="hpc",
            reason="Error",
            stage="finished",
        )
    )
    parsed = json.loads(line)
    assert parsed["message"] == "pod ns/p: finished" and parsed["level"] == "INFO"
    assert {k: parsed[k] for k in ("pod_uid", "job_id", "site", "reason", "stage")} == {
        "pod_uid": "u-1",
        "job_id": "42",
        "site": "hpc",
        "reason": "Error",
        "stage": "finished",
    }
    assert "ValueError" in parsed["exception"] and JWT not in line


def test_text_lines_are_redacted_too():
    assert JWT not in TextFormatter().format(record("calling with %s", f"Bearer {JWT}"))
