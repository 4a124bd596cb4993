"""The local federation as a user meets it (deploy/local/federation.sh): two sidecars on the local
Slurm (partitions debug and batch), the gateway in front, the site's own devidp; pods sent with the
`pod --gateway` CLI, an identity Secret written by `token login` (device flow, approved over HTTP as
a user would in a browser)."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slurm
CLI = [sys.executable, "-m", "interlink_provider.cli.main"]


@pytest.fixture(scope="module")
def federation(local_site):
    script = REPO / "deploy" / "local" / "federation.sh"
    started = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    yield f"unix://{local_site}/gateway/gateway.sock"
    subprocess.run(["bash", str(script), "stop"], capture_output=True, timeout=60)


def run_through(gateway: str, manifest) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "pod", "--gateway", gateway, "run", "--rm", "--timeout", "180", str(manifest)],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_pods_reach_the_site_they_name_or_select(federation):
    ran = run_through(federation, REPO / "examples" / "federation" / "two-sites.yaml")
    assert ran.returncode == 0, ran.stderr
    assert "named-site ran in partition batch" in ran.stdout  # local-b
    assert "selected-site ran in partition debug" in ran.stdout  # local-a


def test_a_user_logs_in_and_runs_a_pod_as_themselves(federation, local_site, tmp_path):
    ca = str(local_site / "devidp" / "ca.pem")
    secret = tmp_path / "my-identity.yaml"
    login = subprocess.Popen(
        [
            *CLI,
            "token",
            "login",
            "--issuer",
            "https://127.0.0.1:8480/",
            "--ca-file",
            ca,
            "--namespace",
            "team-a",
            "--secret-name",
            "my-identity",
            "-o",
            str(secret),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert login.stderr is not None
    found = re.search(r"open (\S+) and enter the code (\S+)", login.stderr.readline())
    assert found
    form = urllib.parse.urlencode({"user_code": found.group(2), "username": "demo", "password": "demo"}).encode()
    with urllib.request.urlopen(found.group(1).split("?")[0], form, context=ssl.create_default_context(cafile=ca)):
        pass
    assert login.wait(30) == 0
    pod = (REPO / "examples" / "federation" / "as-myself.yaml").read_text()
    both = tmp_path / "as-myself.yaml"
    both.write_text(secret.read_text() + "---\n" + pod)
    ran = run_through(federation, both)
    assert ran.returncode == 0, ran.stderr
    # the local site maps /demo to ilp-demo (deploy/local/sidecar.yaml): never root
    assert "running as ilp-demo" in ran.stdout and "no token here" in ran.stdout
    grants = local_site / "gateway" / "user-grants.json"
    assert grants.stat().st_mode & 0o777 == 0o600 and '"subject": "demo"' in grants.read_text()
