"""Crash safety: the sidecar killed at the worst moments loses no pod and submits no job twice.

The kill points are real process deaths (`os._exit`, no cleanup) placed by
`ILP_FAULT`; the daemon is then restarted from the same state directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from interlink_provider.cli.client import SidecarClient, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import SUCCEEDED, UNKNOWN, phase_of
from sidecars.core.kits.faults import EXIT_CODE
from sidecars.daemon.serve import DAMAGED_STATE
from tests.helpers import Sidecar, held_strays, site_dir, slurm, wait_cancelled, wait_for
from tests.podkit import pod

pytestmark = pytest.mark.slurm


def request(command: str = "echo done") -> dict:
    p = pod([{"name": "c", "image": "busybox", "command": ["sh", "-c", command]}], automountServiceAccountToken=False)
    return manifest.create_request(p, manifest.Manifests(), namespace="ns")


async def all_succeeded(client: SidecarClient, uids: list[str]) -> bool:
    answers = await client.status([pod_ref(uid) for uid in uids])
    return len(answers) == len(uids) and all(phase_of(a) == SUCCEEDED for a in answers)


async def test_killed_between_sbatch_and_the_database_write(local_site, tmp_path):
    sidecar = Sidecar(tmp_path / "s").start(env={"ILP_FAULT": "after-submit"})
    req = request()
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(sidecar.address) as client:
        with pytest.raises(aiohttp.ClientError):
            await client.create(req)  # the daemon dies after sbatch, before recording the job id
    assert sidecar.process.wait(10) == EXIT_CODE
    jobs = sidecar.jobs_named(sidecar.prefix + uid)
    assert len(jobs) == 1, "sbatch ran once before the crash"
    sidecar.start()  # restart without the fault, same state directory
    try:
        async with SidecarClient(sidecar.address) as client:
            await wait_for(lambda: all_succeeded(client, [uid]), 60, what="the adopted pod to finish")
            again = await client.create(req)  # the Virtual Kubelet may retry its create
            [status] = await client.status([pod_ref(uid)])
        assert again["PodJID"] == jobs[0] == status["JID"]
        assert sidecar.jobs_named(sidecar.prefix + uid) == jobs, "no second job was submitted"
        assert "adopting job" in sidecar.log()
    finally:
        sidecar.stop()


async def test_killed_during_a_status_cycle(local_site, tmp_path):
    sidecar = Sidecar(tmp_path / "s").start(env={"ILP_FAULT": "during-poll"})
    requests = [request(f"echo pod {i}") for i in range(5)]
    uids = [r["pod"]["metadata"]["uid"] for r in requests]
    async with SidecarClient(sidecar.address) as client:
        for req in requests:
            try:
                await client.create(req)
            except aiohttp.ClientError:
                break  # the first status cycle with jobs killed it
    assert sidecar.process.wait(30) == EXIT_CODE
    sidecar.start()
    try:
        async with SidecarClient(sidecar.address) as client:
            for req in requests:  # what the VK re-sends: creates are idempotent
                await client.create(req)
            await wait_for(lambda: all_succeeded(client, uids), 90, what="every pod to finish")
        for uid in uids:
            assert len(sidecar.jobs_named(sidecar.prefix + uid)) == 1
    finally:
        sidecar.stop()


async def test_sigkill_at_random_moments_accounts_for_every_pod_once(local_site, tmp_path):
    """A burst of creates with SIGKILLs at random times: every acknowledged pod survives,
    resent creates never duplicate a job, and at the end each pod has exactly one job."""
    rng = random.Random(1234)
    sidecar = Sidecar(tmp_path / "s")
    requests = [request(f"echo pod {i}") for i in range(24)]
    acknowledged: set[str] = set()
    for _round in range(4):
        sidecar.start()
        killer = asyncio.get_running_loop().call_later(rng.uniform(0.05, 0.6), sidecar.process.kill)
        async with SidecarClient(sidecar.address) as client:
            for req in requests:
                try:
                    answer = await client.create(req)
                    acknowledged.add(answer["PodUID"])
                except aiohttp.ClientError:
                    break
        killer.cancel()
        sidecar.kill()
    sidecar.start()
    try:
        uids = [r["pod"]["metadata"]["uid"] for r in requests]
        async with SidecarClient(sidecar.address) as client:
            known = {p["uid"] for p in await client.pods()}
            assert acknowledged <= known, "an acknowledged pod was lost"
            for req in requests:
                await client.create(req)
            await wait_for(lambda: all_succeeded(client, uids), 120, what="every pod to finish")
        for uid in uids:
            assert len(sidecar.jobs_named(sidecar.prefix + uid)) == 1, uid
    finally:
        sidecar.stop()


@pytest.mark.serial
async def test_scheduler_down_makes_pods_unknown_then_they_recover(local_site, tmp_path):
    sidecar = Sidecar(tmp_path / "s").start()
    req = request("sleep 8; echo finished")
    uid = req["pod"]["metadata"]["uid"]
    pid_file = site_dir() / "slurm" / "slurmctld.pid"
    try:
        async with SidecarClient(sidecar.address) as client:
            await client.create(req)

            async def running():
                return (await client.status([pod_ref(uid)]))[0]["containers"][0]["state"].get("running")

            await wait_for(running, 60, what="the pod to run")
            subprocess.run(["kill", pid_file.read_text().strip()], check=True)
            try:

                async def unknown():
                    pods = {p["uid"]: p for p in await client.pods()}
                    return pods[uid]["phase"] == UNKNOWN

                await wait_for(unknown, 60, what="phase Unknown while slurmctld is down")
                [status] = await client.status([pod_ref(uid)])
                assert "running" in status["containers"][0]["state"], "a failed poll must not fail the pod"
            finally:
                slurm("/usr/sbin/slurmctld")
            await wait_for(lambda: all_succeeded(client, [uid]), 90, what="recovery after slurmctld restarts")
        assert "status poll failed" in sidecar.log()
    finally:
        sidecar.stop()


async def test_unknown_jobs_with_our_prefix_are_cancelled_only_when_configured(local_site, tmp_path):
    keep = Sidecar(tmp_path / "keep")
    # Strays of the sidecar's own account and of a pod account (its agent cancels that one).
    job_ids = held_strays(keep.prefix, [keep.user, "ilp-bob"], "dea")
    keep.start()
    keep.stop()
    assert slurm("squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%T").split() == ["PENDING", "PENDING"]
    cancel = Sidecar(tmp_path / "keep", {"cancel_unknown_jobs": True}).start()
    try:
        await wait_cancelled(job_ids, "the stray jobs to be cancelled")
        assert "cancelling 2 jobs no pod owns" in cancel.log()
    finally:
        cancel.stop()


@pytest.mark.serial
async def test_slurmctld_restarted_under_load_loses_nothing_and_submits_nothing_twice(local_site, tmp_path):
    sidecar = Sidecar(tmp_path / "s", {"status": {"poll_interval": 1}, "create_wait_seconds": 2}).start()
    running = [request("sleep 6; echo before") for _ in range(6)]
    during = [request("echo during") for _ in range(6)]
    pid_file = site_dir() / "slurm" / "slurmctld.pid"
    uids = [r["pod"]["metadata"]["uid"] for r in running + during]
    try:
        async with SidecarClient(sidecar.address) as client:
            answers = await asyncio.gather(*(client.create(r) for r in running))
            assert all(a["PodJID"] for a in answers)
            subprocess.run(["kill", pid_file.read_text().strip()], check=True)
            try:
                # Pods created while the controller is away are accepted and queued, not failed.
                queued = await asyncio.gather(*(client.create(r) for r in during))
                assert all(a["PodJID"] == "" for a in queued)

                async def unknown():
                    pods = {p["uid"]: p for p in await client.pods()}
                    return all(pods[r["pod"]["metadata"]["uid"]]["phase"] == UNKNOWN for r in running)

                await wait_for(unknown, 60, what="the running pods to be Unknown")
                assert not any(p["phase"] == "Failed" for p in await client.pods())
            finally:
                slurm("/usr/sbin/slurmctld")
            await wait_for(lambda: all_succeeded(client, uids), 180, what="every pod to finish after the restart")
        for uid in uids:
            assert len(sidecar.jobs_named(sidecar.prefix + uid)) == 1, uid
    finally:
        sidecar.stop()


@pytest.mark.serial
@pytest.mark.long
async def test_jobs_that_leave_the_queue_within_two_seconds_still_end_right(local_site, tmp_path):
    """MinJobAge=2: finished jobs vanish from squeue at Slurm's next purge. The sidecar is stopped
    while its jobs end and vanish; started again, it must still tell success from failure (from
    sacct and the runner's files)."""
    conf = site_dir() / "slurm" / "slurm.conf"
    original = conf.read_text()
    conf.write_text(re.sub(r"^MinJobAge=\d+$", "MinJobAge=2", original, flags=re.M))
    slurm("scontrol", "reconfigure")
    sidecar = Sidecar(tmp_path / "s", {"status": {"poll_interval": 1}}).start()
    try:
        ok, failing = request("echo fine"), request("echo broken >&2; exit 3")
        async with SidecarClient(sidecar.address) as client:
            for body in (ok, failing):
                assert (await client.create(body))["PodJID"]
        sidecar.stop()
        names = [sidecar.prefix + b["pod"]["metadata"]["uid"] for b in (ok, failing)]

        async def vanished():
            return not any(sidecar.jobs_named(name) for name in names)

        await wait_for(vanished, 150, interval=2, what="Slurm to purge the finished jobs")
        sidecar.start()
        async with SidecarClient(sidecar.address) as client:

            async def ended():
                answers = await client.status([pod_ref(b["pod"]["metadata"]["uid"]) for b in (ok, failing)])
                return answers if all(phase_of(a) in ("Succeeded", "Failed") for a in answers) else None

            good, bad = await wait_for(ended, 60, what="both pods to end")
        assert phase_of(good) == SUCCEEDED and phase_of(bad) == "Failed"
        assert bad["containers"][0]["state"]["terminated"]["exitCode"] == 3
    finally:
        sidecar.stop()
        conf.write_text(original)
        slurm("scontrol", "reconfigure")


@pytest.mark.serial
@pytest.mark.long
async def test_sigkill_at_random_moments_during_a_500_pod_run(local_site, tmp_path):
    """500 pods created by 20 concurrent callers while the sidecar is SIGKILLed at random moments
    (during the burst and while the pods run); unacknowledged creates are sent again, as the VK
    would. Afterwards every pod is accounted for exactly once: one job each, all succeeded."""
    rng = random.Random(500)
    sidecar = Sidecar(tmp_path / "s", {"status": {"poll_interval": 1}, "create_wait_seconds": 0})
    requests = {r["pod"]["metadata"]["uid"]: r for r in (request("true") for _ in range(500))}
    acknowledged: set[str] = set()
    kills = 0
    while len(acknowledged) < len(requests) or kills < 4:
        sidecar.start()
        killer = asyncio.get_running_loop().call_later(rng.uniform(0.3, 3.0), sidecar.process.kill)
        pending = [uid for uid in requests if uid not in acknowledged]

        async def caller(client: SidecarClient, pending: list[str] = pending) -> None:
            while pending:
                uid = pending.pop()
                try:
                    acknowledged.add((await client.create(requests[uid]))["PodUID"])
                except aiohttp.ClientError:
                    return  # killed: the rest is sent again after the restart

        async with SidecarClient(sidecar.address) as client:
            await asyncio.gather(*(caller(client) for _ in range(20)))
            if not pending:  # all acknowledged: this kill lands while pods run
                await asyncio.sleep(3.5)
        killer.cancel()
        sidecar.kill()
        kills += 1
    sidecar.start()
    try:
        async with SidecarClient(sidecar.address) as client:
            assert acknowledged <= {p["uid"] for p in await client.pods()}, "an acknowledged pod was lost"
            await wait_for(
                lambda: all_succeeded(client, list(requests)), 300, interval=2, what="all 500 pods to finish"
            )
        names = slurm("squeue", "-h", "-t", "all", "-o", "%j").split()
        ours = [name for name in names if name.startswith(sidecar.prefix)]
        assert sorted(ours) == sorted(sidecar.prefix + uid for uid in requests)  # one job per pod, no more
    finally:
        sidecar.stop()


async def test_a_damaged_state_database_stops_the_start_and_is_left_as_it_was(local_site, tmp_path):
    """A record the sidecar cannot read, or a file SQLite finds damaged: the sidecar refuses to
    start, saying which and what to do, and writes nothing over it (starting without those pods
    would forget jobs that run on, and the Virtual Kubelet would create them again)."""
    sidecar = Sidecar(tmp_path / "s").start()
    req = request()
    uid = req["pod"]["metadata"]["uid"]
    try:
        async with SidecarClient(sidecar.address) as client:
            await client.create(req)
    finally:
        sidecar.stop()
    database = Path(sidecar.config["state_dir"]) / "sidecar.db"
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("UPDATE pods SET summary='{\"containers\": [' WHERE uid=?", (uid,))
    damaged = [database.read_bytes()]
    raw = bytearray(database.read_bytes())
    raw[4096:8192] = os.urandom(4096)  # the first table's page, after the header's
    damaged.append(bytes(raw))
    for content, why in zip(damaged, (f"pod {uid}: JSONDecodeError", "damaged ("), strict=True):
        for journal in database.parent.glob("sidecar.db-*"):
            journal.unlink()  # the last start's, of the other content
        database.write_bytes(content)
        sidecar.start(wait=False)
        assert sidecar.process is not None and sidecar.process.wait(timeout=60) == DAMAGED_STATE
        [refusal] = [json.loads(line) for line in sidecar.log().splitlines() if "cannot start" in line][-1:]
        assert refusal["level"] == "ERROR" and f"the state database {database} is damaged" in refusal["message"]
        assert why in refusal["message"] and "Restore it from a copy" in refusal["message"], refusal
        assert "Traceback" not in sidecar.log()
        assert database.read_bytes() == content, "the sidecar wrote over the damaged database"
        sidecar.stop()
        checked = check_state(sidecar)
        assert checked.returncode == 1 and why in checked.stdout and "Traceback" not in checked.stderr, checked
    for journal in database.parent.glob("sidecar.db-*"):
        journal.unlink()
    database.write_bytes(damaged[0])  # repaired by removing the unreadable record
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("DELETE FROM pods WHERE uid=?", (uid,))
    checked = check_state(sidecar)
    assert checked.returncode == 0 and f"{database}: readable, 0 pods" in checked.stdout, checked


def check_state(sidecar: Sidecar) -> subprocess.CompletedProcess[str]:
    return site_command(sidecar, "check-state")


async def test_a_lost_database_is_rebuilt_from_the_live_jobs_and_their_pods_claimed_by_their_owner(
    local_site, tmp_path
):
    """The database gone while two jobs run (as a pod account): `site rebuild-state` writes their
    records from Slurm, the restarted sidecar (which cancels unknown jobs) keeps them, and the
    owner's next status call and create re-sent claim them: containers, logs and deletion work,
    and no job is submitted twice."""
    overrides = {
        "auth": {"unix_socket_account": "ilp-bob"},
        "cancel_unknown_jobs": True,
        "status": {"poll_interval": 1},
    }
    sidecar = Sidecar(tmp_path / "s", overrides).start()
    requests = [request("echo before; sleep 600"), request("echo before; sleep 20; echo after")]
    pods = [r["pod"] for r in requests]
    uids = [p["metadata"]["uid"] for p in pods]
    try:
        async with SidecarClient(sidecar.address) as client:
            jobs = [(await client.create(r))["PodJID"] for r in requests]

            async def running():
                return all(phase_of(s) == "Running" for s in await client.status(pods)) and len(jobs) == 2

            await wait_for(running, 60, what="both pods to run")
    finally:
        sidecar.stop()
    for database in Path(sidecar.config["state_dir"]).glob("sidecar.db*"):
        database.unlink()  # lost, no copy

    rebuilt = site_command(sidecar, "rebuild-state")
    assert rebuilt.returncode == 0, rebuilt
    assert "2 records rebuilt, 0 jobs already known" in rebuilt.stdout and "as ilp-bob: rebuilt" in rebuilt.stdout
    assert "2 submitted" in check_state(sidecar).stdout
    again = site_command(sidecar, "rebuild-state")  # idempotent: the records are there now
    assert again.returncode == 0 and "0 records rebuilt, 2 jobs already known" in again.stdout, again

    sidecar.start()
    try:
        async with SidecarClient(sidecar.address) as client:
            [first] = await client.status([pods[0]])  # claims it: the pod's containers come with it
            assert first["JID"] == jobs[0] and [c["name"] for c in first["containers"]] == ["c"]

            async def first_running():
                return phase_of((await client.status([pods[0]]))[0]) == "Running"

            await wait_for(first_running, 30, what="the claimed pod's files to be read again")
            await wait_for(lambda: _job_gone(jobs[1]), 60, what="the second job to end, before its claim")
            await asyncio.sleep(2)  # a status cycle or two: its rebuilt record finished without containers
            answer = await client.create(requests[1])  # the VK's create re-sent claims it
            assert answer["PodJID"] == jobs[1]
            [second] = await client.status([pods[1]])  # its end read from the runner's files at the claim
            assert phase_of(second) == SUCCEEDED, second
            assert second["containers"][0]["state"]["terminated"]["exitCode"] == 0
            query = {"Namespace": "ns", "PodUID": uids[0], "PodName": pods[0]["metadata"]["name"], "ContainerName": "c"}
            assert "before" in await client.logs_text({**query, "Opts": {}})
            await client.delete(pods[0])
            await wait_for(lambda: _job_gone(jobs[0]), 60, what="the first job to be cancelled")
        for uid, job_id in zip(uids, jobs, strict=True):
            assert sidecar.jobs_named(sidecar.prefix + uid) == [job_id], "a job was submitted twice"
        assert "rebuilt record of job" in sidecar.log() and "no pod owns" not in sidecar.log()
    finally:
        sidecar.stop()


async def _job_gone(job_id: str) -> bool:
    """The job no longer runs (stopped by its pod's deletion, it ends as the runner exits)."""
    state = slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", check=False).strip()
    return state not in ("PENDING", "RUNNING", "COMPLETING")


def site_command(sidecar: Sidecar, command: str) -> subprocess.CompletedProcess[str]:
    """`site <command>` as root, as an admin would run it."""
    argv = [sys.executable, "-m", "interlink_provider.cli.main", "site", command, "--config", str(sidecar.config_path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)
