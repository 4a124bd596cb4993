"""One contract, every batch system: the same pods must behave the same on Slurm (the real
local slurmctld) and on HTCondor (the CLI EMULATOR in tests/emulators/htcondor, since no
HTCondor daemons can run here): status transitions, exit codes, logs, graceful deletion,
idempotent create and re-adoption after a SIGKILL of the sidecar."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from interlink_provider.cli.client import SidecarClient, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import FAILED, RUNNING, SUCCEEDED
from tests.helpers import CONDOR_BIN, Sidecar, htcondor_overrides, wait_for
from tests.integration.test_rest_api import run_until

pytestmark = pytest.mark.slurm

NAMESPACE = "contract"


def site_sidecar(backend: str, workdir: Path, slots: int = 8) -> Sidecar:
    overrides = {"status": {"poll_interval": 1}, "create_wait_seconds": 5}
    if backend == "htcondor":
        overrides.update(htcondor_overrides(workdir, slots=slots))
        overrides["htcondor"]["hold_timeout_seconds"] = 4
    return Sidecar(workdir / "sidecar", overrides)


@pytest.fixture(params=["slurm", "htcondor"])
def site(request, local_site, tmp_path):
    sidecar = site_sidecar(request.param, tmp_path).start()
    yield sidecar
    sidecar.wait_jobs_gone(60)
    sidecar.stop()


@pytest.fixture
def condor_site(local_site, tmp_path):
    """An HTCondor pool with no free slot: jobs stay Idle until something happens to them."""
    sidecar = site_sidecar("htcondor", tmp_path, slots=0).start()
    yield sidecar
    sidecar.wait_jobs_gone(60)
    sidecar.stop()


def pod_request(name: str, script: str, **spec) -> dict:
    pod = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            **spec,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace=NAMESPACE)


def uid_of(body: dict) -> str:
    return body["pod"]["metadata"]["uid"]


def terminated(answer: dict) -> dict:
    return answer["containers"][0]["state"].get("terminated") or {}


async def logs(client: SidecarClient, body: dict) -> str:
    return await client.logs_text({"PodUID": uid_of(body), "Namespace": NAMESPACE, "ContainerName": "main", "Opts": {}})


async def test_status_exit_codes_and_logs(site):
    good = pod_request("good", "echo out; echo err >&2; sleep 2")
    bad = pod_request("bad", "echo failing; exit 3")
    async with SidecarClient(site.address) as client:
        await client.create(good)
        await client.create(bad)
        await run_until(client, uid_of(good), RUNNING)
        succeeded = await run_until(client, uid_of(good), SUCCEEDED)
        failed = await run_until(client, uid_of(bad), FAILED)
        texts = (await logs(client, good), await logs(client, bad))
        for body in (good, bad):
            await client.delete(body["pod"])
    assert terminated(succeeded)["exitCode"] == 0
    assert terminated(failed)["exitCode"] == 3 and terminated(failed)["reason"] == "Error"
    assert sorted(texts[0].split()) == ["err", "out"] and texts[1].strip() == "failing"


async def test_deletion_stops_a_running_pod_gracefully(site):
    body = pod_request(
        "stoppable",
        "trap 'echo got TERM; exit 0' TERM; echo up; while :; do sleep 0.2; done",
        terminationGracePeriodSeconds=5,
    )

    def log_text() -> str:
        found = list(Path(site.pods_root).glob(f"*/{NAMESPACE}/{uid_of(body)}/containers/main/log"))
        return found[0].read_text(errors="replace") if found else ""

    async def started() -> bool:
        return " up" in log_text()

    async def ended() -> bool:
        return not site.live_jobs()

    async with SidecarClient(site.address) as client:
        created = await client.create(body)
        await run_until(client, uid_of(body), RUNNING)
        await wait_for(started, 30, what="the container to start")
        await client.delete(body["pod"])
        await wait_for(ended, 60, what="the job to end")
    assert "got TERM" in log_text()
    assert site.jobs_named(site.prefix + uid_of(body)) == [created["PodJID"]]


async def test_create_is_idempotent_and_a_killed_sidecar_readopts_its_jobs(site):
    body = pod_request("survivor", "sleep 4; echo survived")
    async with SidecarClient(site.address) as client:
        first = await client.create(body)
        again = await client.create(body)
        await run_until(client, uid_of(body), RUNNING)
    site.kill()  # SIGKILL while the job runs
    site.start()
    async with SidecarClient(site.address) as client:
        answer = await run_until(client, uid_of(body), SUCCEEDED, timeout=90)
        text = await logs(client, body)
        await client.delete(body["pod"])
    assert first["PodJID"] and again["PodJID"] == first["PodJID"] == answer["JID"]
    assert site.jobs_named(site.prefix + uid_of(body)) == [first["PodJID"]]  # never submitted twice
    assert text.strip() == "survived"


async def test_a_held_htcondor_job_waits_with_its_reason_then_fails(condor_site):
    """HTCondor's own state: a job held before it started shows as Waiting with the HoldReason (an
    admin may release it), then fails after hold_timeout_seconds and is removed."""
    site = condor_site
    body = pod_request("held", "sleep 30")
    async with SidecarClient(site.address) as client:
        created = await client.create(body)
        environment = site.config["htcondor"]["environment"]
        subprocess.run(
            [str(CONDOR_BIN / "condor_hold"), "-reason", "site maintenance", created["PodJID"]],
            env={**os.environ, **environment},
            check=True,
            capture_output=True,
        )

        async def waiting_for_hold():
            [answer] = await client.status([pod_ref(uid_of(body))])
            state = answer["containers"][0]["state"].get("waiting") or {}
            return state if "site maintenance" in state.get("message", "") else None

        waiting = await wait_for(waiting_for_hold, 30, what="the hold to show")
        failed = await run_until(client, uid_of(body), FAILED, timeout=60)
        await client.delete(body["pod"])
    assert waiting["reason"] == "Held" and "HTCondor job" in waiting["message"], waiting
    ended = terminated(failed)
    assert ended["reason"] == "HoldTimeout" and "site maintenance" in ended["message"], ended
    assert site.live_jobs() == []  # removed from the queue
