"""What a site admin reads in the sidecar's log: JSON lines (the log is a file, not a terminal),
one line per pod state change carrying the pod UID, job id, site and reason; and, at debug
level with failures of every kind, never a token, a Secret's value or an env value."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import FAILED, SUCCEEDED
from tests.helpers import Sidecar, pod_dir, wait_for
from tests.idp import free_port, token_auth
from tests.integration.test_rest_api import run_until
from tests.integration.test_site_auth import token_for

pytestmark = pytest.mark.slurm

SECRET_VALUE = "s3cret-VALUE-9f2c"
ENV_VALUE = "env-VALUE-77ab"
REFUSED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.Zm9yZ2Vk"


def secretive_pod(name: str, script: str) -> dict:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "logs"},
        "stringData": {"password": SECRET_VALUE},
    }
    pod = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "volumes": [{"name": "creds", "secret": {"secretName": "creds"}}],
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "env": [{"name": "API_KEY", "value": ENV_VALUE}],
                    "volumeMounts": [{"name": "creds", "mountPath": "/creds"}],
                }
            ],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(secrets={("logs", "creds"): secret}), namespace="logs")


def logged(sidecar: Sidecar, uid: str, stage: str):
    """A predicate for wait_for: the sidecar's log has the pod's line for this stage."""

    async def found() -> bool:
        lines = [json.loads(line) for line in sidecar.log().splitlines() if line.strip()]
        return any(line.get("pod_uid") == uid and line.get("stage") == stage for line in lines)

    return found


async def test_debug_logs_are_json_state_changes_without_credentials(local_site, unix_accounts, idp, tmp_path):
    port = free_port()
    shared = Path(tempfile.mkdtemp(prefix="ilp-logs-"))
    shared.chmod(0o711)
    sidecar = Sidecar(
        tmp_path / "s",
        {
            "pods_root": str(shared / "pods"),
            "listen": {"host": "127.0.0.1", "port": port},
            "status": {"poll_interval": 1},
            "auth": token_auth(idp, [{"sub": "alice", "account": "ilp-alice"}]),
        },
    ).start(env={"ILP_LOG_LEVEL": "DEBUG"})
    try:
        token = await token_for(idp, "alice")
        ok = secretive_pod("reads-secret", 'test "$(cat /creds/password)" = "$API_KEY" || echo differ')
        failing = secretive_pod("fails", "echo $API_KEY $(cat /creds/password) >&2; exit 7")
        async with SidecarClient(f"http://127.0.0.1:{port}", token=token) as alice:
            await alice.create(ok)
            await alice.create(failing)
            await run_until(alice, ok["pod"]["metadata"]["uid"], SUCCEEDED)
            await run_until(alice, failing["pod"]["metadata"]["uid"], FAILED)
            with pytest.raises(SidecarError):  # malformed: a 4xx, logged
                await alice.call("POST", "/create", {"pod": {"metadata": {"name": "x"}}})
            for body in (ok, failing):
                await alice.delete(body["pod"])
            # Deletion is confirmed by the reconciler after the reply: wait for its line.
            await wait_for(logged(sidecar, failing["pod"]["metadata"]["uid"], "deleted"), 60, what="the deleted line")
        async with SidecarClient(f"http://127.0.0.1:{port}", token=REFUSED) as mallory:
            with pytest.raises(SidecarError):
                await mallory.pods()
        async with SidecarClient(f"http://127.0.0.1:{port}", token=token[:-6] + "AAAAAA") as tampered:
            with pytest.raises(SidecarError):
                await tampered.pods()
    finally:
        sidecar.stop()
    text = sidecar.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(line["level"] == "DEBUG" for line in lines)  # the level really was debug
    failed_uid = failing["pod"]["metadata"]["uid"]
    changes = [line for line in lines if line.get("pod_uid") == failed_uid]
    assert [c["stage"] for c in changes][:1] == ["accepted"] and changes[-1]["stage"] == "deleted", changes
    ended = next(c for c in changes if c.get("phase") == FAILED)
    assert ended["job_id"] and ended["site"] == sidecar.config["site_name"] and ended["reason"].startswith("Error")
    for needle in (token, token.split(".")[2], REFUSED, REFUSED.split(".")[1], SECRET_VALUE, ENV_VALUE):
        assert needle not in text, f"{needle[:12]}... reached the log"
    # The values did reach the job (the test would be empty otherwise).
    job_out = (pod_dir(shared / "pods", "logs", failed_uid) / "containers" / "c" / "log").read_text()
    assert ENV_VALUE in job_out and SECRET_VALUE in job_out
