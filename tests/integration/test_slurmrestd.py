"""The slurmrestd transport against the real slurmrestd (deploy/local/site.sh runs it on
127.0.0.1:6820 with JWT auth): pods run, their sbatch options arrive as job properties,
mapped identities run as their own accounts, deletion is graceful, and what slurmrestd
cannot do is a clear error."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import aiohttp
import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import RUNNING, SUCCEEDED
from tests.helpers import Sidecar, held_strays, pod_dir, slurm, wait_cancelled, wait_for
from tests.idp import free_port, token_auth
from tests.integration.test_rest_api import run_until
from tests.integration.test_site_auth import token_for, whoami_pod

pytestmark = pytest.mark.slurm


def restd_sidecar(workdir: Path, site: Path, url: str = "http://127.0.0.1:6820", **extra) -> Sidecar:
    restd = {"url": url, "jwt_key_file": str(site / "slurm" / "jwt_hs256.key")}
    return Sidecar(
        workdir, {"transport": {"kind": "slurmrestd", "slurmrestd": restd}, "status": {"poll_interval": 1}, **extra}
    )


def pod_request(name: str, script: str, annotations: dict[str, str] | None = None, **spec) -> dict:
    pod = {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            **spec,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="rest")


def scontrol_fields(job_id: str) -> dict[str, str]:
    words = slurm("scontrol", "-o", "show", "job", job_id).split()
    return dict(word.split("=", 1) for word in words if "=" in word)


async def metric(sidecar: Sidecar, name: str) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sidecar.socket)) as session:
        async with session.get("http://sidecar/metrics") as response:
            text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_a_pod_runs_through_slurmrestd_with_its_options(local_site, tmp_path):
    sidecar = restd_sidecar(tmp_path / "s", local_site).start()
    try:
        body = pod_request(
            "via-rest",
            "echo hello from rest; sleep 3",
            annotations={"slurm-job.vk.io/flags": "--comment=from-rest --time=7"},
            activeDeadlineSeconds=600,
        )
        uid = body["pod"]["metadata"]["uid"]
        async with SidecarClient(sidecar.address) as client:
            created = await client.create(body)
            job_id = created["PodJID"]
            await run_until(client, uid, RUNNING)
            fields = scontrol_fields(job_id)
            await run_until(client, uid, SUCCEEDED)
            log = await client.logs_text({"PodUID": uid, "Namespace": "rest", "ContainerName": "main", "Opts": {}})
            await client.delete(body["pod"])
        # The #SBATCH lines (ignored by slurmrestd) arrived as job properties.
        assert fields["JobName"] == sidecar.prefix + uid and fields["Comment"] == "from-rest"
        assert fields["TimeLimit"] == "00:10:00"  # the pod's deadline wins over the annotation's --time
        assert fields["StdOut"].endswith(f"rest/{uid}/job.out") and fields["Partition"] == "debug"
        assert log.strip() == "hello from rest"
        assert await metric(sidecar, 'ilp_scheduler_commands_total{command="slurmrestd-submit",outcome="ok"}') == 1
        assert await metric(sidecar, 'ilp_scheduler_commands_total{command="sbatch",') == 0
    finally:
        sidecar.stop()


async def test_deletion_is_graceful_and_an_unmappable_option_is_a_clear_error(local_site, tmp_path):
    sidecar = restd_sidecar(tmp_path / "s", local_site).start()
    try:
        stoppable = pod_request(
            "stoppable",
            "trap 'echo got TERM; exit 0' TERM; echo up; while :; do sleep 0.2; done",
            terminationGracePeriodSeconds=5,
        )
        uid = stoppable["pod"]["metadata"]["uid"]
        odd = pod_request("odd", "true", annotations={"slurm-job.vk.io/flags": "--tmp=100"})
        async with SidecarClient(sidecar.address) as client:
            created = await client.create(stoppable)
            await run_until(client, uid, RUNNING)
            log_file = pod_dir(sidecar.pods_root, "rest", uid) / "containers/main/log"

            async def started() -> bool:
                return log_file.exists() and " up" in log_file.read_text(errors="replace")

            async def ended() -> bool:
                return not sidecar.live_jobs()

            await wait_for(started, 30, what="the container to start")
            await client.delete(stoppable["pod"])
            await wait_for(ended, 60, what="the job to end")
            log = log_file.read_text()
            # Refused when it is created (the options are mapped then), not after it was accepted.
            with pytest.raises(SidecarError) as rejected:
                await client.create(odd)
        assert "got TERM" in log  # the container heard TERM and could finish
        assert sidecar.jobs_named(sidecar.prefix + uid) == [created["PodJID"]]
        waiting = str(rejected.value)
        assert rejected.value.status == 422 and not sidecar.jobs_named(sidecar.prefix + odd["pod"]["metadata"]["uid"])
        assert "--tmp cannot be passed through slurmrestd" in waiting, waiting
    finally:
        sidecar.stop()


async def test_slurmrestd_unreachable_leaves_the_pod_pending_not_failed(local_site, tmp_path):
    sidecar = restd_sidecar(
        tmp_path / "s", local_site, url=f"http://127.0.0.1:{free_port()}", create_wait_seconds=2
    ).start()
    try:
        body = pod_request("nowhere", "true")
        async with SidecarClient(sidecar.address) as client:
            created = await client.create(body)
            statuses = await client.status([pod_ref(body["pod"]["metadata"]["uid"])])
        waiting = statuses[0]["containers"][0]["state"]["waiting"]
        assert not created["PodJID"] and "did not answer" in waiting["message"], waiting
        assert "did not answer" in sidecar.log()
    finally:
        sidecar.stop()


async def test_mapped_identities_run_as_their_own_accounts(local_site, unix_accounts, idp, tmp_path):
    """Tokens are minted per account from slurmctld's JWT key: alice's job is alice's."""
    port = free_port()
    shared = Path(tempfile.mkdtemp(prefix="ilp-restd-"))
    shared.chmod(0o711)  # the job accounts traverse it
    sidecar = restd_sidecar(
        tmp_path / "s",
        local_site,
        listen={"host": "127.0.0.1", "port": port},
        pods_root=str(shared / "pods"),
        auth=token_auth(idp, [{"sub": "alice", "account": "ilp-alice"}]),
    ).start()
    try:
        token = await token_for(idp, "alice")
        body = whoami_pod("rest-alice")
        uid = body["pod"]["metadata"]["uid"]
        async with SidecarClient(f"http://127.0.0.1:{port}", token=token) as client:
            created = await client.create(body)
            await run_until(client, uid, SUCCEEDED)
            log = await client.logs_text({"PodUID": uid, "Namespace": "team", "ContainerName": "c", "Opts": {}})
        owner = slurm("squeue", "-h", "-t", "all", "-j", created["PodJID"], "-o", "%u").strip()
        assert (log.strip(), owner, pod_dir(shared / "pods", "team", uid).owner()) == ("ilp-alice",) * 3
    finally:
        sidecar.stop()
        shutil.rmtree(shared, ignore_errors=True)


async def test_a_pod_submitted_on_hold_gets_its_job_and_waits(local_site, tmp_path):
    """slurmrestd answers a held submission with an "error" next to the new job's id: it is a job."""
    sidecar = restd_sidecar(tmp_path / "s", local_site, slurm={"flags": {"allow": ["--hold"]}}).start()
    try:
        body = pod_request("held", "true", annotations={"slurm-job.vk.io/flags": "--hold"})
        async with SidecarClient(sidecar.address) as client:
            created = await client.create(body)

            async def held():
                [answer] = await client.status([pod_ref(body["pod"]["metadata"]["uid"])])
                return answer["containers"][0]["state"].get("waiting", {}).get("reason") == "JobHeldUser"

            await wait_for(held, 30, what="the pod to wait as held")
            await client.delete(body["pod"])
        assert created["PodJID"].isdigit()
        assert sidecar.jobs_named(sidecar.prefix + body["pod"]["metadata"]["uid"]) == [created["PodJID"]]
    finally:
        sidecar.stop()


async def test_unknown_jobs_of_every_account_are_cancelled_through_slurmrestd(local_site, tmp_path):
    """With cancel_unknown_jobs, strays of the sidecar's own user and of a pod account are both
    cancelled, each with a token minted for its user (before, only the default user's)."""
    sidecar = restd_sidecar(tmp_path / "s", local_site, cancel_unknown_jobs=True)
    job_ids = held_strays(sidecar.prefix, [sidecar.user, "ilp-bob"], "bea")
    sidecar.start()
    try:
        await wait_cancelled(job_ids, "both strays to be cancelled")
        assert "cancelling 2 jobs no pod owns" in sidecar.log()
    finally:
        sidecar.stop()
        slurm("scancel", *job_ids, check=False)
