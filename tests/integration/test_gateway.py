"""The gateway between the Virtual Kubelet's protocol and two real sites over gRPC + TLS,
with its own tokens from a real devidp, on real Slurm."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from types import SimpleNamespace

import aiohttp
import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.devidp.tls import ensure_certificates
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import SUCCEEDED, phase_of
from tests.federation import LABEL, GatewayProcess, grpc_sidecar, vk_request, wait_until_up
from tests.helpers import wait_for
from tests.idp import free_port

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def federation(local_site, unix_accounts, idp, tmp_path_factory):
    root = tmp_path_factory.mktemp("gateway")
    sites = {name: grpc_sidecar(root / name, idp) for name in ("alpha", "beta")}
    gateway = GatewayProcess(root / "gw", idp, sites).start()
    asyncio.run(wait_until_up(gateway, 2))
    yield gateway, sites
    gateway.stop()
    for sidecar in sites.values():
        sidecar.stop()
        shutil.rmtree(sidecar.scratch, ignore_errors=True)


def hello(
    name: str, annotations: dict | None = None, script: str = "id -un", mounts: list | None = None, **spec
) -> dict:
    container = {"name": "c", "image": "busybox", "command": ["sh", "-c", script], "volumeMounts": mounts or []}
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, **spec, "containers": [container]},
    }


async def finished(client: SidecarClient, uid: str) -> dict:
    async def done():
        answers = await client.status([pod_ref(uid)])
        return answers[0] if answers and phase_of(answers[0]) in ("Succeeded", "Failed") else None

    return await wait_for(done, 90, what=f"pod {uid} to finish")


async def pods_at(sidecar) -> set[str]:
    """UIDs of the pods a site has a working directory for (namespace gw)."""
    return {path.name for path in sidecar.pods_root.glob("*/gw/*")}


async def site_gpus(sidecar) -> int:
    async with SidecarClient(sidecar.address) as client:
        ping = await client.ping()
    return sum(int(a["available"]) for a in ping["resources"].get("accelerators") or [])


async def test_pods_are_routed_to_their_site_and_run_through_grpc(federation):
    gateway, sites = federation
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "greeting", "namespace": "gw"},
        "data": {"text": "hello via the gateway\n"},
    }
    manifests = manifest.Manifests(config_maps={("gw", "greeting"): config})
    named = hello(
        "gw-named",
        annotations={"interlink.provider/site": "beta"},
        volumes=[{"name": "g", "configMap": {"name": "greeting"}}],
        mounts=[{"name": "g", "mountPath": "/etc/greeting"}],
        script="cat /etc/greeting/text; id -un",
    )
    selected = hello("gw-selected", nodeSelector={LABEL: "alpha", "kubernetes.io/role": "agent"})
    async with SidecarClient(gateway.address) as client:
        a = await client.call("POST", "/create", vk_request(named, manifests))
        b = await client.call("POST", "/create", vk_request(selected))
        assert a["PodJID"] and b["PodJID"]
        assert phase_of(await finished(client, a["PodUID"])) == SUCCEEDED
        assert phase_of(await finished(client, b["PodUID"])) == SUCCEEDED
        log = await client.logs_text({"PodUID": a["PodUID"], "Namespace": "gw", "ContainerName": "c", "Opts": {}})
        ping = await client.call("POST", "/pinglink")
    assert log == "hello via the gateway\nilp-alice\n"  # the ConfigMap reached the site; the gateway's account
    assert a["PodUID"] in await pods_at(sites["beta"]) and a["PodUID"] not in await pods_at(sites["alpha"])
    assert b["PodUID"] in await pods_at(sites["alpha"]) and b["PodUID"] not in await pods_at(sites["beta"])
    gpus = {a["resourceType"]: int(a["available"]) for a in ping["resources"]["accelerators"]}
    per_site = await site_gpus(sites["alpha"])
    assert per_site > 0 and gpus == {"nvidia.com/gpu": 2 * per_site}  # both sites on one virtual node


async def test_a_gang_s_members_are_routed_to_one_site_and_run_as_one_job(federation):
    gateway, sites = federation
    gang = {
        "interlink.provider/gang": "gw-gang",
        "interlink.provider/gang-size": "2",
        "slurm-job.vk.io/flags": "--partition=all",  # the local Slurm's two nodes
    }
    members = [hello(f"gw-gang-{i}", annotations=gang, script="echo $RANK of $WORLD_SIZE") for i in (0, 1)]
    async with SidecarClient(gateway.address) as client:
        created = [await client.call("POST", "/create", vk_request(m)) for m in members]
        finals = [await finished(client, c["PodUID"]) for c in created]
    assert [phase_of(f) for f in finals] == [SUCCEEDED, SUCCEEDED]
    assert len({f["JID"] for f in finals}) == 1
    uids = {c["PodUID"] for c in created}
    assert [name for name, sidecar in sites.items() if uids <= await pods_at(sidecar)] in (["alpha"], ["beta"])


async def test_a_pod_for_no_site_is_refused_with_the_reason(federation):
    gateway, _ = federation
    async with SidecarClient(gateway.address) as client:
        with pytest.raises(SidecarError) as named:
            await client.call(
                "POST", "/create", vk_request(hello("gw-nowhere", annotations={"interlink.provider/site": "gamma"}))
            )
        with pytest.raises(SidecarError) as selected:
            await client.call("POST", "/create", vk_request(hello("gw-nolabel", nodeSelector={LABEL: "gamma"})))
        with pytest.raises(SidecarError) as malformed:
            await client.call("POST", "/create", {"pod": {"spec": "not a spec"}})
    assert named.value.status == 422 and "names no site" in named.value.message
    assert selected.value.status == 422 and LABEL in selected.value.message
    assert malformed.value.status == 422 and "spec" in malformed.value.message


def test_the_health_probe_reports_the_sites(federation):
    gateway, _ = federation
    probe = subprocess.run(
        [
            sys.executable,
            "-m",
            "interlink_provider.cli.main",
            "gateway",
            "--config",
            str(gateway.config_path),
            "--health",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode == 0, probe.stderr
    assert "alpha: up" in probe.stdout and "beta: up" in probe.stdout


async def test_a_site_that_goes_down_and_comes_back_loses_nothing(federation):
    gateway, sites = federation
    async with SidecarClient(gateway.address) as client:
        running = await client.call(
            "POST",
            "/create",
            vk_request(
                hello("gw-long", annotations={"interlink.provider/site": "beta"}, script="sleep 8; echo survived")
            ),
        )
        sites["beta"].stop()

        async def beta_down():
            return "beta: down" in (await client.call("GET", "/healthz"))

        await wait_for(beta_down, 20, what="the gateway to see beta down")
        [during] = await client.status([pod_ref(running["PodUID"])])
        assert phase_of(during) != "Failed"  # last known, never Failed because the site is unreachable
        elsewhere = await client.call("POST", "/create", vk_request(hello("gw-while-down")))
        assert elsewhere["PodUID"] in await pods_at(sites["alpha"])  # new pods go to the site that is up
        sites["beta"].start()
        result = await finished(client, running["PodUID"])
        log = await client.logs_text({"PodUID": running["PodUID"], "Namespace": "gw", "ContainerName": "c", "Opts": {}})
    assert phase_of(result) == SUCCEEDED and log == "survived\n"
    assert phase_of(await _final(gateway, elsewhere["PodUID"])) == SUCCEEDED


async def _final(gateway, uid: str) -> dict:
    async with SidecarClient(gateway.address) as client:
        return await finished(client, uid)


def test_a_gateway_whose_port_is_taken_stops_with_the_reason(idp, tmp_path):
    nowhere = SimpleNamespace(target="127.0.0.1:1", ca=idp.ca_file)  # never reached: it stops first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = GatewayProcess(
            tmp_path / "gw", idp, {"nowhere": nowhere}, {"listen": {"host": "127.0.0.1", "port": port}}
        ).start()
        assert gateway.process is not None and gateway.process.wait(timeout=60) == 1
    log = gateway.log_path.read_text()
    [refusal] = [json.loads(line) for line in log.splitlines() if "cannot start" in line]
    assert refusal["level"] == "ERROR" and f"('127.0.0.1', {port})" in refusal["message"], refusal
    assert "address already in use" in refusal["message"] and "Traceback" not in log


async def test_over_tcp_only_the_vk_with_its_certificate_and_token_creates_pods(federation, idp, tmp_path):
    """The interLink API on all interfaces, as a VK outside the gateway's pod reaches it: HTTPS,
    the VK's client certificate (its TLS.CertFile) and its VKTokenFile's token, both required."""
    _, sites = federation
    server_ca, cert, key = ensure_certificates(tmp_path / "server", "127.0.0.1")
    vk_ca, vk_cert, vk_key = ensure_certificates(tmp_path / "vk", "vk")
    token = "3b9d0c2e8f6a41d7b5c4e1f0a9d8c7b6"
    token_file = tmp_path / "vk-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    port = free_port()
    listen = {
        "host": "0.0.0.0",
        "port": port,
        "tls_cert": str(cert),
        "tls_key": str(key),
        "client_ca": str(vk_ca),
        "token_file": str(token_file),
    }
    gateway = GatewayProcess(tmp_path / "gw", idp, sites, {"listen": listen}).start()
    address, tls = f"https://127.0.0.1:{port}", {"ca_file": str(server_ca)}
    vk = {**tls, "cert_file": str(vk_cert), "key_file": str(vk_key)}
    try:

        async def healthy():
            async with SidecarClient(address, token=token, **vk) as client:
                try:
                    return (await client.call("GET", "/healthz")).count(": up") == 2
                except (SidecarError, OSError):
                    return False

        await wait_for(healthy, 30, what="the gateway's TCP listener to see both sites")
        refused = vk_request(hello("gw-tcp-anonymous", annotations={"interlink.provider/site": "alpha"}))
        async with SidecarClient(address, token=token, **tls) as no_certificate:
            with pytest.raises(aiohttp.ClientError):  # the TLS handshake refuses it
                await no_certificate.call("POST", "/create", refused)
        async with SidecarClient(address, **vk) as no_token:
            with pytest.raises(SidecarError) as unauthorized:
                await no_token.call("POST", "/create", refused)
        assert unauthorized.value.status == 401
        async with SidecarClient(address, token=token, **vk) as client:
            created = await client.call(
                "POST", "/create", vk_request(hello("gw-tcp", annotations={"interlink.provider/site": "alpha"}))
            )
            assert phase_of(await finished(client, created["PodUID"])) == SUCCEEDED
        uid = refused["pod"]["metadata"]["uid"]
        assert created["PodUID"] in await pods_at(sites["alpha"])
        for site in sites.values():
            assert uid not in await pods_at(site)  # the refused pod went nowhere
    finally:
        gateway.stop()


async def test_a_log_larger_than_a_grpc_message_is_read_whole_and_from_either_end(federation):
    """24 MiB of log (over gRPC's 4 MiB message default; 20 MiB gave 0 bytes and
    RESOURCE_EXHAUSTED before the site streamed it in chunks): whole, its tail, its first bytes."""
    gateway, _ = federation
    line = "x" * 99 + "\n"
    lines = 24 * 1024 * 1024 // len(line)
    script = f"yes {'x' * 99} | head -n {lines}; echo last-line"
    async with SidecarClient(gateway.address) as client:
        created = await client.call("POST", "/create", vk_request(hello("gw-big-log", script=script)))
        assert phase_of(await finished(client, created["PodUID"])) == SUCCEEDED
        query = {"PodUID": created["PodUID"], "Namespace": "gw", "ContainerName": "c"}
        size, tail = 0, b""
        async for chunk in client.logs({**query, "Opts": {}}):
            size, tail = size + len(chunk), (tail + chunk)[-200:]
        last = await client.logs_text({**query, "Opts": {"Tail": 2}})
        first = await client.logs_text({**query, "Opts": {"Bytes": 150}})
    assert size == lines * len(line) + len("last-line\n") and tail.endswith(line.encode() + b"last-line\n")
    assert last == line + "last-line\n"
    assert first == (line + line)[:150]
