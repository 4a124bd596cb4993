"""The sidecar's gRPC API over a real TLS channel, with tokens from a real devidp, on real Slurm."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from interlink_provider.devidp.tls import ensure_certificates
from interlink_provider.pods import manifest
from interlink_provider.rpc.client import bearer, offloader, open_channel
from interlink_provider.rpc.offloader.v1 import offloader_pb2 as pb
from tests.federation import grpc_sidecar
from tests.helpers import Sidecar, wait_for
from tests.integration.test_site_auth import USER_SCOPES, token_for

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def site(local_site, unix_accounts, idp, tmp_path_factory):
    sidecar = grpc_sidecar(tmp_path_factory.mktemp("grpc"), idp)
    yield sidecar
    sidecar.stop()
    shutil.rmtree(sidecar.scratch, ignore_errors=True)


def pod_json(name: str, script: str = "id -un; echo from-grpc") -> tuple[bytes, str]:
    pod = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }
    request = manifest.create_request(pod, manifest.Manifests(), namespace="grpc")
    return json.dumps(request).encode(), request["pod"]["metadata"]["uid"]


async def expect_error(code: grpc.StatusCode, text: str, call) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code and text in (info.value.details() or ""), (info.value.code(), info.value.details())


async def test_health_and_reflection_are_served(site):
    async with open_channel(site.target, site.ca) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="offloader.v1.Offloader")
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = {s.name async for r in stream for s in r.list_services_response.service}
    assert {"offloader.v1.Offloader", "grpc.health.v1.Health"} <= services


async def test_a_pod_through_grpc_runs_on_slurm_as_its_owner(site, idp):
    token = await token_for(idp, "alice")
    body, uid = pod_json("grpc-hello")
    async with open_channel(site.target, site.ca) as channel:
        stub = offloader(channel)
        created = await stub.CreatePod(pb.CreatePodRequest(pod_json=body), metadata=bearer(token))
        assert created.uid == uid and created.job_id and created.created
        again = await stub.CreatePod(pb.CreatePodRequest(pod_json=body), metadata=bearer(token))
        assert (again.job_id, again.created) == (created.job_id, False)  # idempotent: one job

        async def finished():
            [status] = (await stub.GetStatus(pb.GetStatusRequest(uids=[uid]), metadata=bearer(token))).pods
            return status if status.phase in ("Succeeded", "Failed") else None

        status = await wait_for(finished, 90, what="the pod to finish")
        assert status.phase == "Succeeded" and status.job_id == created.job_id
        [container] = status.containers
        assert container.WhichOneof("state") == "terminated" and container.terminated.exit_code == 0
        assert container.terminated.finished_at.seconds >= container.terminated.started_at.seconds > 0
        chunks = stub.GetLogs(pb.GetLogsRequest(uid=uid, container="c"), metadata=bearer(token))
        log = b"".join([chunk.data async for chunk in chunks]).decode()
        assert log == "ilp-alice\nfrom-grpc\n"
        tail = stub.GetLogs(
            pb.GetLogsRequest(uid=uid, container="c", tail_lines=1, timestamps=True), metadata=bearer(token)
        )
        assert b"".join([c.data async for c in tail]).decode().endswith(" from-grpc\n")
        listed = await stub.GetStatus(pb.GetStatusRequest(), metadata=bearer(token))
        assert uid in {p.uid for p in listed.pods}
        deleted = await stub.DeletePod(pb.DeletePodRequest(uid=uid), metadata=bearer(token))
        assert deleted.outcome in ("finished before deletion", "deleting")


async def test_calls_without_a_valid_token_or_of_another_owner_are_refused(site, idp):
    alice, bob = await token_for(idp, "alice"), await token_for(idp, "bob")
    elsewhere = await token_for(idp, "alice", audience="https://elsewhere.test")
    reader = await token_for(idp, "alice", "compute.read")
    body, uid = pod_json("grpc-owned", "sleep 30")
    async with open_channel(site.target, site.ca) as channel:
        stub = offloader(channel)
        await expect_error(grpc.StatusCode.UNAUTHENTICATED, "missing_token", stub.Ping(pb.PingRequest()))
        await expect_error(
            grpc.StatusCode.UNAUTHENTICATED, "wrong_audience", stub.Ping(pb.PingRequest(), metadata=bearer(elsewhere))
        )
        await expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            "malformed_token",
            stub.Ping(pb.PingRequest(), metadata=bearer("not-a-jwt")),
        )
        await expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            "missing_scope",
            stub.CreatePod(pb.CreatePodRequest(pod_json=body), metadata=bearer(reader)),
        )
        await stub.CreatePod(pb.CreatePodRequest(pod_json=body), metadata=bearer(alice))
        await expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            "belongs to another identity",
            stub.GetStatus(pb.GetStatusRequest(uids=[uid]), metadata=bearer(bob)),
        )
        await expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            "belongs to another identity",
            stub.DeletePod(pb.DeletePodRequest(uid=uid), metadata=bearer(bob)),
        )
        assert uid not in {p.uid for p in (await stub.GetStatus(pb.GetStatusRequest(), metadata=bearer(bob))).pods}
        assert (await stub.DeletePod(pb.DeletePodRequest(uid=uid), metadata=bearer(alice))).outcome


async def test_bad_requests_get_invalid_argument_with_a_reason(site, idp):
    token = await token_for(idp, "alice", USER_SCOPES)
    bad_pod, _ = pod_json("grpc-bad")
    bad = json.loads(bad_pod)
    bad["pod"]["spec"]["containers"][0]["name"] = "Not_A_DNS_Label"
    async with open_channel(site.target, site.ca) as channel:
        stub = offloader(channel)
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "not JSON",
            stub.CreatePod(pb.CreatePodRequest(pod_json=b"{nope"), metadata=bearer(token)),
        )
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "must be a RetrievedPodData",
            stub.CreatePod(pb.CreatePodRequest(pod_json=b"[1, 2]"), metadata=bearer(token)),
        )
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "pod rejected",
            stub.CreatePod(pb.CreatePodRequest(pod_json=json.dumps(bad).encode()), metadata=bearer(token)),
        )
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "uid is missing",
            stub.DeletePod(pb.DeletePodRequest(), metadata=bearer(token)),
        )
        await expect_error(
            grpc.StatusCode.NOT_FOUND,
            "not known",
            stub.GetLogs(pb.GetLogsRequest(uid="nope", container="c"), metadata=bearer(token)).read(),
        )
        await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "set only one",
            stub.GetLogs(pb.GetLogsRequest(uid="x", tail_lines=1, limit_bytes=1), metadata=bearer(token)).read(),
        )
        info = await stub.Ping(pb.PingRequest(), metadata=bearer(token))
    assert info.status == "ok" and int(info.capacity.cpu) > 0 and info.version
    assert next((a.resource_type, a.available) for a in info.accelerators)[0] == "nvidia.com/gpu"


async def test_plaintext_and_untrusted_clients_cannot_connect(site, idp, tmp_path):
    token = await token_for(idp, "alice")
    async with grpc.aio.insecure_channel(site.target) as plaintext:
        await expect_error(
            grpc.StatusCode.UNAVAILABLE,
            "",
            offloader(plaintext).Ping(pb.PingRequest(), metadata=bearer(token), timeout=5),
        )
    other_ca, _, _ = ensure_certificates(tmp_path / "other", "127.0.0.1")
    async with open_channel(site.target, str(other_ca)) as wrong_ca:  # the server is not who we trust
        await expect_error(
            grpc.StatusCode.UNAVAILABLE,
            "",
            offloader(wrong_ca).Ping(pb.PingRequest(), metadata=bearer(token), timeout=5),
        )


async def test_mutual_tls_requires_a_client_certificate_from_the_configured_ca(
    local_site, unix_accounts, idp, tmp_path
):
    client_ca, client_cert, client_key = ensure_certificates(tmp_path / "clients", "127.0.0.1")
    _, stranger_cert, stranger_key = ensure_certificates(tmp_path / "strangers", "127.0.0.1")
    sidecar = grpc_sidecar(tmp_path / "mtls", idp, client_ca=client_ca)
    token = await token_for(idp, "alice")
    try:
        async with open_channel(sidecar.target, sidecar.ca, str(client_cert), str(client_key)) as channel:
            assert (await offloader(channel).Ping(pb.PingRequest(), metadata=bearer(token))).status == "ok"
        for cert, key in ((None, None), (str(stranger_cert), str(stranger_key))):
            async with open_channel(sidecar.target, sidecar.ca, cert, key) as channel:
                await expect_error(
                    grpc.StatusCode.UNAVAILABLE,
                    "",
                    offloader(channel).Ping(pb.PingRequest(), metadata=bearer(token), timeout=5),
                )
    finally:
        sidecar.stop()
        shutil.rmtree(sidecar.scratch, ignore_errors=True)


async def test_watch_status_pushes_changes_and_resumes_without_gaps(site, idp):
    alice, bob = await token_for(idp, "alice"), await token_for(idp, "bob")
    first, first_uid = pod_json("grpc-watch-1", "echo one")
    second, second_uid = pod_json("grpc-watch-2", "echo two")
    async with open_channel(site.target, site.ca) as channel:
        stub = offloader(channel)
        seen: list[pb.StatusEvent] = []
        stream = stub.WatchStatus(pb.WatchStatusRequest(heartbeat_seconds=1), metadata=bearer(alice))
        await stub.CreatePod(pb.CreatePodRequest(pod_json=first), metadata=bearer(alice))
        succeeded, quiet = False, 0
        async for event in stream:
            seen.append(event)
            succeeded = succeeded or (event.pod.uid == first_uid and event.pod.phase == "Succeeded")
            quiet = quiet + 1 if event.heartbeat else 0
            if succeeded and quiet == 2:  # settled: Succeeded may precede the job's own end by a cycle
                break
        stream.cancel()  # the stream is cut
        phases = [e.pod.phase for e in seen if e.pod.uid == first_uid]
        assert phases[0] == "Pending" and phases[-1] == "Succeeded"
        revisions = [e.revision for e in seen]
        assert revisions == sorted(revisions) and len({e.epoch for e in seen}) == 1
        epoch, last = seen[-1].epoch, seen[-1].revision

        # While nobody watches: a change for alice, and bob's pod (never shown to alice).
        await stub.CreatePod(pb.CreatePodRequest(pod_json=second), metadata=bearer(alice))
        bobs, bobs_uid = pod_json("grpc-watch-bob", "echo bob")
        await stub.CreatePod(pb.CreatePodRequest(pod_json=bobs), metadata=bearer(bob))
        resumed = stub.WatchStatus(
            pb.WatchStatusRequest(epoch=epoch, since_revision=last, heartbeat_seconds=1), metadata=bearer(alice)
        )
        after = []
        async for event in resumed:
            after.append(event)
            if event.pod.uid == second_uid and event.pod.phase == "Succeeded":
                break
        resumed.cancel()
        assert first_uid not in {e.pod.uid for e in after}  # nothing already seen is sent again
        assert bobs_uid not in {e.pod.uid for e in after}
        assert all(e.revision > last for e in after if not e.heartbeat)

        # Another epoch (as after a restart of the sidecar): everything again.
        fresh = stub.WatchStatus(
            pb.WatchStatusRequest(epoch="another", since_revision=10**9, heartbeat_seconds=1), metadata=bearer(alice)
        )
        snapshot = set()
        async for event in fresh:
            if event.heartbeat:
                break
            snapshot.add(event.pod.uid)
        fresh.cancel()
        assert {first_uid, second_uid} <= snapshot and bobs_uid not in snapshot


async def test_a_quiet_watcher_gets_heartbeats_while_others_pods_keep_changing(site, idp):
    """Heartbeats measure silence towards this watcher: a busy site (others' pods changing more
    often than the heartbeat) must not starve it, or a gateway would think the site is down."""
    alice, bob = await token_for(idp, "alice"), await token_for(idp, "bob")
    async with open_channel(site.target, site.ca) as channel:
        stub = offloader(channel)
        snapshot = stub.WatchStatus(pb.WatchStatusRequest(heartbeat_seconds=1), metadata=bearer(bob))
        async for event in snapshot:  # skip bob's earlier pods up to the first heartbeat
            if event.heartbeat:
                break
        epoch, position = event.epoch, event.revision
        snapshot.cancel()
        watch = stub.WatchStatus(
            pb.WatchStatusRequest(epoch=epoch, since_revision=position, heartbeat_seconds=1), metadata=bearer(bob)
        )
        heartbeats = 0

        async def count() -> None:
            nonlocal heartbeats
            async for event in watch:
                heartbeats += event.heartbeat

        counting = asyncio.create_task(count())
        started = time.monotonic()
        while time.monotonic() - started < 4.5:  # alice's pods change about every 0.2 s
            body, uid = pod_json(f"grpc-busy-{int((time.monotonic() - started) * 10)}", "true")
            await stub.CreatePod(pb.CreatePodRequest(pod_json=body), metadata=bearer(alice))
            await stub.DeletePod(pb.DeletePodRequest(uid=uid), metadata=bearer(alice))
            await asyncio.sleep(0.2)
        watch.cancel()
        await asyncio.gather(counting, return_exceptions=True)
    assert heartbeats >= 3, heartbeats


async def test_a_restarted_sidecar_starts_a_new_epoch_and_keeps_its_pods(site, idp):
    token = await token_for(idp, "alice")
    body, uid = pod_json("grpc-restart", "echo kept")
    async with open_channel(site.target, site.ca) as channel:
        stub = offloader(channel)
        await stub.CreatePod(pb.CreatePodRequest(pod_json=body), metadata=bearer(token))
        stream = stub.WatchStatus(pb.WatchStatusRequest(heartbeat_seconds=1), metadata=bearer(token))
        async for before in stream:  # until it has finished: nothing about it changes after the restart
            if before.pod.uid == uid and before.pod.phase == "Succeeded":
                break
        stream.cancel()
    site.stop()
    site.start()
    async with open_channel(site.target, site.ca) as channel:
        stub = offloader(channel)
        stream = stub.WatchStatus(
            pb.WatchStatusRequest(epoch=before.epoch, since_revision=before.revision, heartbeat_seconds=1),
            metadata=bearer(token),
        )
        events = []
        async for event in stream:
            if event.heartbeat:
                break
            events.append(event)
        stream.cancel()
        again = await stub.CreatePod(pb.CreatePodRequest(pod_json=body), metadata=bearer(token))
    assert events and events[0].epoch != before.epoch
    assert uid in {e.pod.uid for e in events}  # the restarted sidecar still knows the pod
    assert not again.created  # and would not submit it twice


def test_a_second_sidecar_on_the_same_grpc_port_is_refused(site, tmp_path):
    """gRPC binds with SO_REUSEPORT by default: a misconfigured second sidecar would then take half
    of the gateway's connections unnoticed. It must fail to start instead, saying why."""
    twin = Sidecar(tmp_path / "twin", {"grpc": site.config["grpc"]}).start(wait=False)
    try:
        assert twin.process is not None and twin.process.wait(timeout=60) != 0
    finally:
        twin.stop()
    [refusal] = [json.loads(line) for line in twin.log().splitlines() if "cannot start" in line]
    assert refusal["level"] == "ERROR" and f"cannot listen for gRPC on {site.target}" in refusal["message"], refusal
    assert "Traceback" not in twin.log()


async def test_streams_end_with_their_token_and_one_identity_cannot_take_every_slot(site, idp):
    """A watch opened with a token that expires 3 s later ends then (UNAUTHENTICATED), not hours
    later; one identity holds at most max_streams_per_identity (16) streams, and others still get theirs."""
    alice, bob = await token_for(idp, "alice"), await token_for(idp, "bob")
    async with open_channel(site.target, site.ca) as channel:
        stub = offloader(channel)
        expires_at = int(time.time()) + 3
        short = idp.forge(sub="alice", client_id="alice", exp=expires_at)
        started = time.monotonic()
        watch = stub.WatchStatus(pb.WatchStatusRequest(heartbeat_seconds=1), metadata=bearer(short))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _event in watch:
                assert time.monotonic() - started < 10, "the watch outlived its token"
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "token expired during the watch" in (ended.value.details() or "")
        assert time.time() >= expires_at and time.monotonic() - started < 10

        watches = [
            stub.WatchStatus(pb.WatchStatusRequest(heartbeat_seconds=1), metadata=bearer(alice)) for _ in range(16)
        ]
        try:
            for open_watch in watches:
                await open_watch.read()  # open: its snapshot or first heartbeat arrived
            extra = stub.WatchStatus(pb.WatchStatusRequest(heartbeat_seconds=1), metadata=bearer(alice))
            await expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "max_streams_per_identity: 16", extra.read())
            others = stub.WatchStatus(pb.WatchStatusRequest(heartbeat_seconds=1), metadata=bearer(bob))
            assert (await others.read()).epoch  # bob is not held up by alice's streams
            others.cancel()
        finally:
            for open_watch in watches:
                open_watch.cancel()

        async def reopened():
            again = stub.WatchStatus(pb.WatchStatusRequest(heartbeat_seconds=1), metadata=bearer(alice))
            try:
                return bool((await again.read()).epoch)
            except grpc.aio.AioRpcError:
                return False
            finally:
                again.cancel()

        await wait_for(reopened, 10, what="alice's share to be free again once her streams closed")
