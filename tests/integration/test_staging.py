"""Datalake staging against the real local Rucio (SQLite, gunicorn), XRootD and Slurm."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

import aiohttp
import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import FAILED, SUCCEEDED, phase_of
from tests.datalake import RSE, SLOW_RSE, put_dataset, xrd_disk_path
from tests.helpers import Sidecar, wait_for
from tests.idp import free_port

pytestmark = pytest.mark.slurm


def staging_pod(name: str, inputs: str, outputs: str = "", script: str = "ls -l /data/in") -> dict:
    annotations = {"datalake.interlink/inputs": inputs}
    if outputs:
        annotations["datalake.interlink/outputs"] = outputs
    pod = {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="data")


def make_sidecar(root: Path, **staging) -> Sidecar:
    options = {
        "cache_dir": str(root / "cache"),
        "connection_window": 2,
        "connection_retry": 1,
        "retries": 1,
        "retry_backoff_seconds": 0.2,
        **staging,
    }
    return Sidecar(root / "sidecar", {"staging": options})


@pytest.fixture(scope="module")
def staging_sidecar(local_site, tmp_path_factory):
    root = tmp_path_factory.mktemp("staging")
    sidecar = make_sidecar(root).start()
    sidecar.cache = root / "cache"
    yield sidecar
    sidecar.stop()


def partial_files(cache: Path) -> list[Path]:
    """Temporary downloads left in a cache (the live sidecar's own download area may exist, empty)."""
    return [path for path in (cache / ".partial").rglob("*") if path.is_file()]


async def final(client: SidecarClient, uid: str, timeout: float = 120) -> dict:
    async def done():
        [answer] = await client.status([pod_ref(uid)])
        return answer if phase_of(answer) in (SUCCEEDED, FAILED) else None

    return await wait_for(done, timeout, what=f"pod {uid} to finish")


async def metric(sidecar: Sidecar, name: str) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sidecar.socket)) as session:
        async with session.get("http://sidecar/metrics") as response:
            text = await response.text()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_dataset_stage_in_on_slurm_and_outputs_registered(staging_sidecar, catalog):
    contents = {"a.dat": os.urandom(300_000), "b.dat": os.urandom(1_000), "c.txt": b"hello\n"}
    did, _ = put_dataset(catalog, contents)
    script = (
        "cd /data/in && md5sum a.dat b.dat c.txt && mkdir -p /data/out/sub && "
        "cat c.txt > /data/out/sub/copy.txt && echo done > /data/out/result.txt && touch /data/in/x 2>/dev/null || echo read-only"
    )
    req = staging_pod(
        "stage-roundtrip",
        f"- {{did: '{did}', mount: /data/in}}",
        "- {mount: /data/out, scope: user, lifetime: 3600}",
        script,
    )
    async with SidecarClient(staging_sidecar.address) as client:
        answer = await client.create(req)
        assert answer["PodJID"] == ""  # submitted only after stage-in
        result = await final(client, answer["PodUID"])
        assert phase_of(result) == SUCCEEDED, result
        log = await client.logs_text({"PodUID": answer["PodUID"], "ContainerName": "c", "Opts": {}})
        pods = {p["uid"]: p for p in await client.pods()}
    for name, data in contents.items():
        assert f"{hashlib.md5(data).hexdigest()}  {name}" in log
    assert "read-only" in log
    uid = answer["PodUID"]
    dataset = f"data.stage-roundtrip.{uid[:8]}"
    assert f"outputs registered in user:{dataset}" in pods[uid]["message"]
    replicas = {r["name"]: r for r in catalog.replicas("user", dataset)}
    assert set(replicas) == {f"{dataset}/result.txt", f"{dataset}/sub/copy.txt"}
    copy = replicas[f"{dataset}/sub/copy.txt"]
    assert copy["adler32"] == adler32_of_bytes(b"hello\n") and copy["rses"][RSE]
    assert xrd_disk_path(next(iter(copy["pfns"]))).read_bytes() == b"hello\n"


def adler32_of_bytes(data: bytes) -> str:
    import zlib

    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def test_site_local_replicas_come_first(catalog):
    did, _ = put_dataset(catalog, {"both.dat": b"on two RSEs"}, rses=(SLOW_RSE, RSE))
    [ref] = catalog.resolve(*did.split(":"))
    assert ":11094/" in ref.sources[0] and ":11095/" in ref.sources[1]  # LOCAL (lan) before REMOTE (wan)


async def test_pods_needing_the_same_dataset_transfer_it_once(staging_sidecar, catalog):
    did, _ = put_dataset(catalog, {f"f{i}.dat": os.urandom(200_000) for i in range(3)})
    async with SidecarClient(staging_sidecar.address) as client:
        before = await metric(staging_sidecar, "ilp_stage_downloads_total")
        files = await metric(staging_sidecar, 'ilp_staged_files_total{direction="in"}')
        phases = await metric(staging_sidecar, 'ilp_stage_throughput_bytes_per_second_count{direction="in"}')
        answers = [
            await client.create(staging_pod(f"shared-{i}", f"- {{did: '{did}', mount: /data/in}}")) for i in range(3)
        ]
        for answer in answers:
            assert phase_of(await final(client, answer["PodUID"])) == SUCCEEDED
        assert await metric(staging_sidecar, "ilp_stage_downloads_total") - before == 3  # 3 files, not 9
        # ...while each pod staged its 3 files in, one stage-in each
        assert await metric(staging_sidecar, 'ilp_staged_files_total{direction="in"}') - files == 9
        assert (
            await metric(staging_sidecar, 'ilp_stage_throughput_bytes_per_second_count{direction="in"}') - phases == 3
        )
        later = await client.create(staging_pod("shared-later", f"- {{did: '{did}', mount: /data/in}}"))
        hits = await metric(staging_sidecar, "ilp_stage_cache_hits_total")
        assert phase_of(await final(client, later["PodUID"])) == SUCCEEDED
        assert await metric(staging_sidecar, "ilp_stage_downloads_total") - before == 3
        assert await metric(staging_sidecar, "ilp_stage_cache_hits_total") - hits == 3


async def failed_reason(client: SidecarClient, req: dict) -> dict:
    answer = await client.create(req)
    result = await final(client, answer["PodUID"])
    assert phase_of(result) == FAILED, result
    return result["containers"][0]["state"]["terminated"]


async def test_a_corrupt_replica_is_detected(staging_sidecar, catalog):
    did, disks = put_dataset(catalog, {"good.dat": os.urandom(50_000)})
    disk = disks["good.dat"]
    corrupt = bytearray(disk.read_bytes())
    corrupt[1000] ^= 0xFF  # same size, one byte flipped
    disk.write_bytes(bytes(corrupt))
    async with SidecarClient(staging_sidecar.address) as client:
        terminated = await failed_reason(client, staging_pod("corrupt", f"- {{did: '{did}', mount: /data/in}}"))
    assert terminated["reason"] == "StageInFailed"
    assert "checksum mismatch" in terminated["message"] and "good.dat" in terminated["message"]
    assert not partial_files(staging_sidecar.cache), "a bad download was kept"


async def test_a_missing_did_fails_the_pod(staging_sidecar):
    async with SidecarClient(staging_sidecar.address) as client:
        terminated = await failed_reason(client, staging_pod("missing", "- {did: 'user:no-such-dataset', mount: /d}"))
    assert terminated["reason"] == "StageInFailed" and "user:no-such-dataset does not exist" in terminated["message"]


async def test_unreachable_storage_fails_with_the_file_and_error(staging_sidecar, catalog):
    dead = f"DEAD_XRD_{uuid.uuid4().hex[:6].upper()}"
    client = catalog.client()
    client.add_rse(dead)
    client.add_protocol(
        dead,
        {
            "scheme": "root",
            "hostname": "127.0.0.1",
            "port": free_port(),
            "prefix": "//rucio/",
            "impl": "rucio.rse.protocols.xrootd.Default",
            "domains": {"lan": {"read": 1, "write": 1, "delete": 1}, "wan": {"read": 1, "write": 1, "delete": 1}},
        },
    )
    client.set_local_account_limit("root", dead, 10**9)
    did, _ = put_dataset(catalog, {"far.dat": b"x" * 10}, rses=(dead,))
    async with SidecarClient(staging_sidecar.address) as sidecar_client:
        terminated = await failed_reason(sidecar_client, staging_pod("unreachable", f"- {{did: '{did}', mount: /d}}"))
    assert terminated["reason"] == "StageInFailed"
    assert "far.dat" in terminated["message"] and re.search(r"(?i)connect|refused|error", terminated["message"])


async def test_invalid_declarations_are_refused_at_create(staging_sidecar):
    cases = [
        ("- {did: 'no-colon', mount: /d}", "not a Rucio DID"),
        ("- {url: 'http://example.org/f', mount: /d}", "not an XRootD URL"),
        ("- {did: 'user:x'}", "mount"),
        ("- {did: 'user:x', url: 'root://h//f', mount: /d}", "exactly one of"),
        ("- {did: 'user:x', mount: relative}", "must be absolute"),
        ("not: a list", "must be a list"),
    ]
    async with SidecarClient(staging_sidecar.address) as client:
        for inputs, reason in cases:
            with pytest.raises(SidecarError) as info:
                await client.create(staging_pod("invalid", inputs))
            assert info.value.status == 422 and reason in info.value.message, (inputs, info.value.message)


async def test_delete_during_transfer_stops_it(local_site, catalog, tmp_path):
    did, _ = put_dataset(catalog, {"big.dat": os.urandom(24 * 1024 * 1024)}, rses=(SLOW_RSE,))
    sidecar = make_sidecar(tmp_path).start()
    try:
        async with SidecarClient(sidecar.address) as client:
            req = staging_pod("cancelled", f"- {{did: '{did}', mount: /d}}")
            answer = await client.create(req)

            async def moving():
                pods = {p["uid"]: p for p in await client.pods()}
                message = pods[answer["PodUID"]]["message"]
                return re.search(r"staging in: 0/1 files, [1-9][\d.]* MB", message) and message

            progress = await wait_for(moving, 30, what="stage-in progress")
            [status] = await client.status([pod_ref(answer["PodUID"])])
            assert status["containers"][0]["state"]["waiting"]["reason"] == "StagingIn"
            assert "files" in status["containers"][0]["state"]["waiting"]["message"]
            assert "staging stopped" in await client.delete(req["pod"])
            pods = {p["uid"]: p for p in await client.pods()}
            assert pods[answer["PodUID"]]["stage"] == "deleted" and pods[answer["PodUID"]]["job_id"] == ""

        async def cleaned():  # the cancelled transfer removes its temporary file as it stops
            return not partial_files(tmp_path / "cache")

        await wait_for(cleaned, 30, what="the interrupted download to be removed")
        assert "staged in" not in sidecar.log(), progress
    finally:
        sidecar.stop()


async def test_a_sidecar_killed_mid_transfer_stages_again_after_restart(local_site, catalog, tmp_path):
    data = os.urandom(24 * 1024 * 1024)
    did, _ = put_dataset(catalog, {"restart.dat": data}, rses=(SLOW_RSE,))
    sidecar = make_sidecar(tmp_path).start()
    try:
        async with SidecarClient(sidecar.address) as client:
            answer = await client.create(
                staging_pod("restarted", f"- {{did: '{did}', mount: /d}}", script="md5sum /d/restart.dat")
            )

            async def moving():
                pods = {p["uid"]: p for p in await client.pods()}
                return "MB" in pods[answer["PodUID"]]["message"]

            await wait_for(moving, 30, what="stage-in progress")
        sidecar.kill()
        sidecar.start()
        async with SidecarClient(sidecar.address) as client:
            result = await final(client, answer["PodUID"], timeout=120)
            assert phase_of(result) == SUCCEEDED, result
            log = await client.logs_text({"PodUID": answer["PodUID"], "ContainerName": "c", "Opts": {}})
        assert log.split()[0] == hashlib.md5(data).hexdigest()
    finally:
        sidecar.stop()
