"""`interlink-provider pod ...` against a real sidecar: what a user types."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slurm


def cli(sidecar, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interlink_provider.cli.main", "pod", "--sidecar", sidecar.address, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_run_examples_and_inspect_them(sidecar):
    result = cli(sidecar, "run", "examples/pipeline.yaml", "--timeout", "90")
    assert result.returncode == 0, result.stderr
    assert "result: pipeline Succeeded" in result.stderr
    assert "processed 1000 lines for run of pipeline" in result.stdout
    listing = cli(sidecar, "list")
    assert "pipeline" in listing.stdout and "Succeeded" in listing.stdout
    status = cli(sidecar, "status", "pipeline")
    assert "Succeeded" in status.stderr and "process: Completed (0)" in status.stderr
    logs = cli(sidecar, "logs", "pipeline", "-c", "fetch")
    assert logs.stdout == "fetched 1000 lines\n"
    assert re.search(r"pipeline: (finished before deletion|deleting)", cli(sidecar, "delete", "pipeline").stdout)


def test_run_follow_streams_logs_and_exit_code_reports_failure(sidecar, tmp_path):
    manifest = tmp_path / "fail.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: failing}\nspec:\n  restartPolicy: Never\n"
        "  containers:\n  - {name: c, image: busybox, command: [sh, -c, 'echo about to fail; exit 3']}\n"
    )
    result = cli(sidecar, "run", "--follow", str(manifest), "--timeout", "90")
    assert result.returncode == 1
    assert "[failing/c] about to fail" in result.stdout
    assert "failing Failed" in result.stderr


def test_jobs_are_retried_per_backoff_limit(sidecar, tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: flaky}\nspec:\n  backoffLimit: 1\n  template:\n"
        "    spec:\n      restartPolicy: Never\n"
        "      containers:\n      - {name: c, image: busybox, command: [sh, -c, 'exit 1']}\n"
    )
    result = cli(sidecar, "run", "-q", str(manifest), "--timeout", "120")
    assert result.returncode == 1
    assert result.stderr.count("created default/flaky-") == 2
    assert "attempt 1 failed, retrying" in result.stderr


def test_cli_errors_are_clear(sidecar, tmp_path):
    """One line each, with the exit code of the one scheme (cli/exits.py): 2 bad input, 1 refused, 3 no answer."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Deployment\nmetadata: {name: d}\n")
    result = cli(sidecar, "run", str(bad))
    assert result.returncode == 2 and "unsupported kind" in result.stderr
    result = cli(sidecar, "status", "no-such-pod")
    assert result.returncode == 1 and "no pod named no-such-pod" in result.stderr
    assert result.stderr.strip().splitlines() == ["interlink-provider pod: HTTP 404: no pod named no-such-pod"]
    result = subprocess.run(
        [sys.executable, "-m", "interlink_provider.cli.main", "pod", "--sidecar", "unix:///nonexistent.sock", "list"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3 and "cannot reach the sidecar" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
