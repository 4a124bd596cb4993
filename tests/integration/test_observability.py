"""What operators see of one pod's life through the federation: Prometheus metrics on the gateway
and the sidecar that move with the pod, and one OpenTelemetry trace that follows it from the
gateway through the site to the scheduler, exported by OTLP to receivers as a Collector would take
it: the gateway over HTTP, the sidecar over gRPC with TLS (the two protocols a Collector serves)."""

from __future__ import annotations

import asyncio
import re
import shutil
import urllib.request

import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError
from interlink_provider.devidp.tls import ensure_certificates
from interlink_provider.pods.phase import SUCCEEDED, phase_of
from tests.federation import GatewayProcess, grpc_sidecar, vk_request, wait_until_up
from tests.helpers import wait_for
from tests.integration.test_gateway import finished, hello
from tests.otlp import OtlpGrpcReceiver, OtlpReceiver

pytestmark = pytest.mark.slurm

SITE = "gamma"
SESSION = "CreatePod#4242"


@pytest.fixture(scope="module")
def observed(local_site, unix_accounts, idp, tmp_path_factory):
    root = tmp_path_factory.mktemp("observed")
    ca, cert, key = ensure_certificates(root / "otlp-tls", "127.0.0.1")
    with OtlpReceiver() as otlp, OtlpGrpcReceiver(ca, cert, key, into=otlp) as otlp_grpc:
        sidecar = grpc_sidecar(root / SITE, idp)
        sidecar.stop()
        sidecar.exporting = otlp_grpc.env()
        sidecar.start(env=sidecar.exporting)  # now exporting its spans, over gRPC
        gateway = GatewayProcess(root / "gw", idp, {SITE: sidecar}).start(env=otlp.env())
        asyncio.run(wait_until_up(gateway, 1))
        yield gateway, sidecar, otlp
        gateway.stop()
        sidecar.stop()
        shutil.rmtree(sidecar.scratch, ignore_errors=True)


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, from the Prometheus exposition format."""
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_:]+(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


async def scrape(address: str) -> dict[str, float]:
    async with SidecarClient(address) as client:
        return samples(await client.call("GET", "/metrics"))


async def until(address: str, key: str, wanted: float, timeout: float = 60) -> None:
    async def reached():
        return (await scrape(address)).get(key) == wanted

    await wait_for(reached, timeout, what=f"{key} == {wanted}")


def pods(site: str, phase: str) -> str:
    return f'ilp_pods{{phase="{phase}",site="{site}"}}'  # the exposition sorts labels by name


def increase(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_move_with_a_pod_through_its_life(observed):
    gateway, sidecar, _ = observed
    site_name = sidecar.config.get("site_name", "local")
    gw_before, site_before = await scrape(gateway.address), await scrape(sidecar.address)
    async with SidecarClient(gateway.address) as client:
        created = await client.call("POST", "/create", vk_request(hello("metered", script="sleep 5; echo done")))
        uid = created["PodUID"]
        await until(sidecar.address, pods(site_name, "Running"), 1)
        await until(gateway.address, pods(SITE, "Running"), 1)
        assert phase_of(await finished(client, uid)) == SUCCEEDED
        with pytest.raises(SidecarError):
            await client.call("POST", "/create", {"pod": {"metadata": {"name": "no-uid"}}})  # malformed: 4xx
    await until(sidecar.address, pods(site_name, "Succeeded"), 1)
    await until(gateway.address, pods(SITE, "Succeeded"), 1)
    site, gw = await scrape(sidecar.address), await scrape(gateway.address)

    assert site[pods(site_name, "Running")] == 0 and gw[pods(SITE, "Running")] == 0
    assert increase(site, site_before, 'ilp_request_seconds_count{operation="create",outcome="ok"}') == 1
    assert increase(site, site_before, 'ilp_scheduler_commands_total{command="sbatch",outcome="ok"}') == 1
    assert increase(site, site_before, 'ilp_scheduler_commands_total{command="squeue",outcome="ok"}') >= 2
    assert increase(site, site_before, "ilp_status_cycle_seconds_count") >= 2
    assert increase(gw, gw_before, 'ilp_request_seconds_count{operation="create",outcome="ok"}') == 1
    assert increase(gw, gw_before, 'ilp_request_seconds_count{operation="create",outcome="error"}') == 1
    assert increase(gw, gw_before, 'ilp_request_seconds_count{operation="status",outcome="ok"}') >= 1
    assert gw['ilp_token_requests_total{grant="client_credentials",outcome="ok"}'] >= 1
    assert gw[f'ilp_site_up{{site="{SITE}"}}'] == 1

    # A forged token is refused by the site and counted by its reason.
    async with SidecarClient(sidecar.address, token="not-a-jwt") as forged:
        with pytest.raises(SidecarError):
            await forged.call("GET", "/pods")
    failures = 'ilp_token_validation_failures_total{reason="MalformedToken"}'
    assert increase(await scrape(sidecar.address), site, failures) == 1

    # The site restarts: the gateway sees it down, re-opens its stream, and counts that.
    reconnects = f'ilp_grpc_stream_reconnects_total{{site="{SITE}"}}'
    sidecar.stop()
    await until(gateway.address, f'ilp_site_up{{site="{SITE}"}}', 0, timeout=30)
    sidecar.start(env=sidecar.exporting)
    await until(gateway.address, f'ilp_site_up{{site="{SITE}"}}', 1, timeout=60)
    assert increase(await scrape(gateway.address), gw, reconnects) >= 1
    await until(gateway.address, pods(SITE, "Succeeded"), 1)  # the resync brought the pod back

    async with SidecarClient(gateway.address) as client:
        await client.call("POST", "/delete", {"metadata": {"name": "metered", "namespace": "gw", "uid": uid}})
    assert (
        increase(await scrape(sidecar.address), site, 'ilp_request_seconds_count{operation="delete",outcome="ok"}') == 1
    )


def test_the_dev_idp_counts_its_token_answers(observed, idp):
    """The third daemon: the gateway's client-credentials grants show at the IdP's /metrics too."""
    with urllib.request.urlopen(idp.issuer + "metrics", timeout=5, context=idp._ssl()) as answer:
        found = samples(answer.read().decode())
    assert found['ilp_devidp_token_responses_total{grant="client_credentials",outcome="issued"}'] >= 1


async def test_one_trace_follows_a_pod_from_the_gateway_to_the_scheduler(observed):
    gateway, _, otlp = observed
    async with SidecarClient(gateway.address) as client:
        client.headers["InterLink-Http-Session"] = SESSION  # as the Virtual Kubelet sends it
        created = await client.call("POST", "/create", vk_request(hello("traced", script="echo traced")))
        uid = created["PodUID"]
        await finished(client, uid)
        client.headers["InterLink-Http-Session"] = "GetLogs#4243"
        await client.logs_text({"PodUID": uid, "Namespace": "gw", "ContainerName": "c", "Opts": {}})

    async def entry():
        return [s for s in otlp.named("gateway /create") if s.attributes.get("k8s.pod.uid") == uid] or None

    [root] = await wait_for(entry, 30, what="the gateway's create span")

    async def whole_trace():
        spans = {s.name: s for s in otlp.trace(root.trace_id)}
        return spans if "scheduler sbatch" in spans else None

    spans = await wait_for(whole_trace, 30, what="the site's spans in the same trace")

    assert root.service == "interlink-provider-gateway" and root.parent_id == "" and root.protocol == "http"
    assert root.attributes["interlink.http_session"] == SESSION and root.attributes["ilp.site"] == SITE
    served = spans["sidecar CreatePod"]
    assert served.service.startswith("interlink-provider-sidecar") and served.parent_id == root.span_id
    assert served.protocol == "grpc"  # the sidecar exports by OTLP/gRPC over TLS
    assert served.attributes["interlink.http_session"] == SESSION  # handed on by the gateway
    create, submit, sbatch = spans["sidecar create"], spans["submit"], spans["scheduler sbatch"]
    assert create.parent_id == served.span_id and create.attributes["k8s.pod.uid"] == uid
    assert submit.parent_id == create.span_id and submit.attributes["k8s.pod.uid"] == uid
    assert sbatch.parent_id == submit.span_id and sbatch.attributes["ilp.scheduler.outcome"] == "ok"

    async def logs_trace():
        gw = [s for s in otlp.named("gateway /getLogs") if s.attributes.get("k8s.pod.uid") == uid]
        site = [s for s in otlp.named("sidecar GetLogs") if gw and s.trace_id == gw[0].trace_id]
        return (gw[0], site[0]) if site else None

    gw_logs, site_logs = await wait_for(logs_trace, 30, what="the logs spans")
    assert site_logs.parent_id == gw_logs.span_id and site_logs.attributes["k8s.pod.uid"] == uid
    assert site_logs.attributes["interlink.http_session"] == "GetLogs#4243"
