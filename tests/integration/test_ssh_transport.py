"""The SSH transport against a real sshd (deploy/local/site.sh runs one on 127.0.0.1:2222) in front
of the real local Slurm: every scheduler command and every file of a pod goes over one persistent
connection; host keys are checked; a cut link is re-established and loses nothing."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import FAILED, SUCCEEDED
from tests.helpers import Sidecar, htcondor_overrides, pod_dir, slurm, traversable_dir
from tests.idp import free_port, token_auth
from tests.integration.test_rest_api import run_until
from tests.integration.test_site_auth import token_for, whoami_pod

pytestmark = pytest.mark.slurm


def ssh_sidecar(workdir, site, known_hosts=None, **extra) -> Sidecar:
    ssh = {
        "host": "127.0.0.1",
        "port": 2222,
        "user": "root",
        "key_file": str(site / "ssh" / "client_ed25519"),
        "known_hosts": str(known_hosts or site / "ssh" / "known_hosts"),
        "keepalive_seconds": 2,
    }
    # The "login node's" directory: one the pods' account can pass through, seen from the
    # test as workdir/on-the-login-node.
    remote = traversable_dir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "on-the-login-node").exists():
        (workdir / "on-the-login-node").symlink_to(remote)
    return Sidecar(
        workdir,
        {
            "transport": {"kind": "ssh", "ssh": ssh},
            "staging": None,  # staging needs the pods' directories on the sidecar's filesystem
            "pods_root": str(remote / "pods"),
            "status": {"poll_interval": 1},
            **extra,
        },
    )


def accepted_connections(site, since: int) -> int:
    """Connections sshd accepted for the sidecar's key since byte `since` of its log."""
    log = (site / "ssh" / "sshd.log").read_text(errors="replace")[since:]
    return len(re.findall(r"Accepted publickey for root", log))


def sshd_log_size(site) -> int:
    return len((site / "ssh" / "sshd.log").read_text(errors="replace"))


def request(name: str, script: str) -> dict:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "ssh"},
        "data": {"greeting": "hello over ssh"},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sec", "namespace": "ssh"},
        "stringData": {"token": "s3cret"},
    }
    pod = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "volumes": [{"name": "c", "configMap": {"name": "cfg"}}, {"name": "s", "secret": {"secretName": "sec"}}],
            "initContainers": [
                {
                    "name": "init",
                    "image": "busybox",
                    "command": ["sh", "-c", "cat /c/greeting"],
                    "volumeMounts": [{"name": "c", "mountPath": "/c"}],
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "s", "mountPath": "/s"}],
                }
            ],
        },
    }
    manifests = manifest.Manifests(config_maps={("ssh", "cfg"): config}, secrets={("ssh", "sec"): secret})
    return manifest.create_request(pod, manifests, namespace="ssh")


async def test_a_pod_runs_through_one_ssh_connection(local_site, tmp_path):
    sidecar = ssh_sidecar(tmp_path / "s", local_site)
    mark = sshd_log_size(local_site)
    sidecar.start()
    try:
        body = request("via-ssh", "wc -c < /s/token; for i in 1 2 3; do echo line $i; sleep 0.3; done")
        uid = body["pod"]["metadata"]["uid"]
        async with SidecarClient(sidecar.address) as client:
            created = await client.create(body)
            assert created["PodJID"].isdigit()
            follow = {"PodUID": uid, "Namespace": "ssh", "ContainerName": "main", "Opts": {"Follow": True}}
            followed = await asyncio.wait_for(client.logs_text(follow), 90)
            await run_until(client, uid, SUCCEEDED)
            init = await client.logs_text({"PodUID": uid, "Namespace": "ssh", "ContainerName": "init", "Opts": {}})
            tail = await client.logs_text(
                {"PodUID": uid, "Namespace": "ssh", "ContainerName": "main", "Opts": {"Tail": 1}}
            )
            assert sidecar.jobs_named(sidecar.prefix + uid) == [created["PodJID"]]
            await client.delete(body["pod"])
        assert followed.split() == ["6", "line", "1", "line", "2", "line", "3"]
        assert init.strip() == "hello over ssh" and tail.strip() == "line 3"
        found = pod_dir(tmp_path / "s" / "on-the-login-node" / "pods", "ssh", uid)
        assert (found / "job.sh").exists()  # written over the link, on the "login node"
        assert not (found / "volumes" / "s").exists()  # the secret was scrubbed when the pod ended
        assert accepted_connections(local_site, mark) == 1  # everything over one connection
    finally:
        sidecar.stop()


async def test_an_unknown_host_key_is_refused(local_site, tmp_path):
    other = tmp_path / "known_hosts"
    key = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    assert key.returncode == 0
    other.write_text(
        f"[127.0.0.1]:2222 {(tmp_path / 'impostor.pub').read_text().split(' ', 2)[0]} "
        f"{(tmp_path / 'impostor.pub').read_text().split(' ', 2)[1]}\n"
    )
    sidecar = ssh_sidecar(tmp_path / "s", local_site, known_hosts=other).start()
    try:
        async with SidecarClient(sidecar.address) as client:
            with pytest.raises(SidecarError) as refused:
                await client.create(request("impostor", "true"))
        assert refused.value.status == 503 and "host key" in refused.value.message
    finally:
        sidecar.stop()


async def test_a_cut_link_is_reestablished_and_loses_nothing(local_site, tmp_path):
    sidecar = ssh_sidecar(tmp_path / "s", local_site).start()
    try:
        body = request("cut", "sleep 4; echo survived")
        uid = body["pod"]["metadata"]["uid"]
        async with SidecarClient(sidecar.address) as client:
            created = await client.create(body)
            # Cut the link: kill the sshd process serving the sidecar's connection.
            subprocess.run(["pkill", "-f", "sshd: root@notty"], check=False)
            started = time.monotonic()
            await run_until(client, uid, SUCCEEDED, timeout=90)
            log = await client.logs_text({"PodUID": uid, "Namespace": "ssh", "ContainerName": "main", "Opts": {}})
            answers = await client.status([pod_ref(uid)])
        assert log.strip() == "survived" and answers[0]["JID"] == created["PodJID"]
        assert sidecar.jobs_named(sidecar.prefix + uid) == [created["PodJID"]]  # never resubmitted
        assert "reconnected" in sidecar.log() and time.monotonic() - started < 60
    finally:
        sidecar.stop()


async def test_two_identities_run_as_their_own_accounts_over_ssh(local_site, unix_accounts, idp, tmp_path):
    """The trust network over the SSH transport: each owner's job is submitted with sudo -n -u on the
    login node and its directory is given to that account."""
    port = free_port()
    remote = Path(tempfile.mkdtemp(prefix="ilp-ssh-login-"))
    remote.chmod(0o711)  # the job accounts traverse it
    sidecar = ssh_sidecar(
        tmp_path / "s",
        local_site,
        listen={"host": "127.0.0.1", "port": port},
        pods_root=str(remote / "pods"),
        auth=token_auth(idp, [{"sub": "alice", "account": "ilp-alice"}, {"sub": "bob", "account": "ilp-bob"}]),
    ).start()
    try:
        accounts = {}
        for name in ("alice", "bob"):
            token = await token_for(idp, name)
            body = whoami_pod(f"ssh-{name}")
            uid = body["pod"]["metadata"]["uid"]
            async with SidecarClient(f"http://127.0.0.1:{port}", token=token) as client:
                created = await client.create(body)
                await run_until(client, uid, SUCCEEDED)
                log = await client.logs_text({"PodUID": uid, "Namespace": "team", "ContainerName": "c", "Opts": {}})
            accounts[name] = (
                log.strip(),
                slurm("squeue", "-h", "-t", "all", "-j", created["PodJID"], "-o", "%u").strip(),
                pod_dir(remote / "pods", "team", uid).owner(),
            )
        assert accounts == {"alice": ("ilp-alice",) * 3, "bob": ("ilp-bob",) * 3}
    finally:
        sidecar.stop()
        shutil.rmtree(remote, ignore_errors=True)


def condor_request(name: str, script: str) -> dict:
    pod = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="ssh")


async def test_htcondor_runs_over_the_ssh_transport(local_site, tmp_path):
    """HTCondor's commands (the CLI emulator, tests/emulators/htcondor) and the pod's files reach a
    "submit node" over SSH (the local sshd), as Slurm's do."""
    sidecar = ssh_sidecar(tmp_path / "s", local_site, **htcondor_overrides(tmp_path)).start()
    remote = tmp_path / "s" / "on-the-login-node" / "pods"  # the submit node's, reachable by the pods' account
    try:
        body = condor_request("over-ssh", "echo via ssh; exit 4")
        uid = body["pod"]["metadata"]["uid"]
        async with SidecarClient(sidecar.address) as client:
            created = await client.create(body)
            failed = await run_until(client, uid, FAILED)
            text = await client.logs_text({"PodUID": uid, "Namespace": "ssh", "ContainerName": "main", "Opts": {}})
            await client.delete(body["pod"])
        assert failed["containers"][0]["state"]["terminated"]["exitCode"] == 4 and text.strip() == "via ssh"
        assert sidecar.jobs_named(sidecar.prefix + uid) == [created["PodJID"]]
        assert f'+InterLinkUID = "{uid}"' in (pod_dir(remote, "ssh", uid) / "job.sub").read_text()  # sent over the link
    finally:
        sidecar.stop()
