"""The interLink plugin REST API against a real sidecar process and the real local Slurm."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path

import aiohttp
import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import FAILED, RUNNING, SUCCEEDED, phase_of
from tests.helpers import Sidecar, pod_dir, slurm, wait_for
from tests.podkit import pod

pytestmark = pytest.mark.slurm


def request_for(p: dict) -> dict:
    """What the interLink API would POST for this pod (no service-account volume)."""
    p = {**p, "spec": {**p["spec"], "automountServiceAccountToken": False}}
    return manifest.create_request(p, manifest.Manifests(), namespace="ns")


async def phase(client: SidecarClient, uid: str) -> str:
    answers = await client.status([pod_ref(uid)])
    return phase_of(answers[0]) if answers else ""


async def run_until(client: SidecarClient, uid: str, wanted: str, timeout: float = 60) -> dict:
    async def reached():
        answers = await client.status([pod_ref(uid)])
        return answers[0] if answers and phase_of(answers[0]) == wanted else None

    return await wait_for(reached, timeout, what=f"pod {uid} {wanted}")


async def raw(sidecar: Sidecar, method: str, path: str, body: bytes) -> tuple[int, str]:
    connector = aiohttp.UnixConnector(path=sidecar.socket)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.request(method, f"http://sidecar{path}", data=body) as response:
            return response.status, await response.text()


# ------------------------------------------------------------------ the happy path


async def test_create_status_logs_delete_and_idempotent_create(sidecar):
    p = pod([{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo one; sleep 1; echo two"]}])
    req = request_for(p)
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(sidecar.address) as client:
        first = await client.create(req)
        again = await client.create(req)
        assert first == again and first["PodUID"] == uid and first["PodJID"].isdigit()
        assert sidecar.jobs_named(sidecar.prefix + uid) == [first["PodJID"]]
        final = await run_until(client, uid, SUCCEEDED)
        assert final["JID"] == first["PodJID"] and final["name"] == "p" and final["namespace"] == "ns"
        term = final["containers"][0]["state"]["terminated"]
        assert term["exitCode"] == 0 and term["reason"] == "Completed"
        assert term["startedAt"].endswith("Z") and term["finishedAt"] >= term["startedAt"]
        query = {"PodUID": uid, "Namespace": "ns", "PodName": "p", "ContainerName": "c", "Opts": {}}
        assert await client.logs_text(query) == "one\ntwo\n"
        assert await client.logs_text({**query, "Opts": {"Tail": 1}}) == "two\n"
        assert await client.logs_text({**query, "Opts": {"Bytes": 2}}) == "on"
        stamped = await client.logs_text({**query, "Opts": {"Timestamps": True}})
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z one\n", stamped)
        assert await client.logs_text({**query, "Opts": {"SinceTime": "2999-01-01T00:00:00Z"}}) == ""
        assert await client.logs_text({**query, "Opts": {"SinceSeconds": 3600}}) == "one\ntwo\n"
        # Succeeded can be seen while Slurm still completes the job: either answer is right.
        assert re.search(r"(finished before deletion|deleting)$", (await client.delete(req["pod"])).strip())
        assert "already deleted" in await client.delete(req["pod"])


async def test_legacy_list_create_and_go_nulls(sidecar):
    p = pod([{"name": "c", "image": "busybox", "command": ["true"], "args": None, "env": None}])
    req = request_for(p)
    req["container"] = None
    async with SidecarClient(sidecar.address) as client:
        answer = await client.call("POST", "/create", [req])
        assert isinstance(answer, list) and answer[0]["PodUID"] == req["pod"]["metadata"]["uid"]
        await run_until(client, answer[0]["PodUID"], SUCCEEDED)


async def test_follow_streams_until_the_container_ends(sidecar):
    p = pod(
        [{"name": "c", "image": "busybox", "command": ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 1; done"]}]
    )
    req = request_for(p)
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(sidecar.address) as client:
        await client.create(req)
        await wait_for(lambda: _running_or_done(client, uid), 60, what="container start")
        query = {"PodUID": uid, "ContainerName": "c", "Opts": {"Follow": True}}
        text = await asyncio.wait_for(client.logs_text(query), 60)
        assert text == "line 1\nline 2\nline 3\n"


async def _running_or_done(client, uid):
    return await phase(client, uid) in (RUNNING, SUCCEEDED)


async def test_ping_reports_slurm_resources_and_taints(sidecar):
    async with SidecarClient(sidecar.address) as client:
        ping = await client.ping()
    assert ping["status"] == "ok"
    assert int(ping["resources"]["cpu"]) >= 0 and ping["resources"]["memory"].endswith("Mi")
    assert ping["resources"]["accelerators"][0]["resourceType"] == "nvidia.com/gpu"
    assert ping["taints"][0]["key"] == "virtual-node.interlink/no-schedule"


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "path,body,status,reason",
    [
        ("/create", b"{not json", 400, "invalid JSON"),
        ("/create", b"", 400, "empty"),
        ("/create", b'"a string"', 400, "RetrievedPodData"),
        ("/create", b'{"pod": 5}', 422, "pod"),
        (
            "/create",
            b'{"pod": {"metadata": {"name": "x", "uid": "u1"}, "spec": {"containers": "nope"}}}',
            422,
            "containers",
        ),
        (
            "/create",
            b'{"pod": {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "i"}]}}}',
            422,
            "no UID",
        ),
        (
            "/create",
            b'{"pod": {"metadata": {"name": "x", "uid": "../../etc"}, "spec": {"containers": [{"name": "a"}]}}}',
            422,
            "not a valid UID",
        ),
        (
            "/create",
            b'{"pod": {"metadata": {"name": "x", "uid": "u2"}, "spec": {"containers": [{"name": "a", "image": "busybox", "command": ["true"], "volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": "../../etc"}]}], "volumes": [{"name": "v", "emptyDir": {}}]}}}',
            422,
            "must not contain '..'",
        ),
        (
            "/create",
            b'{"pod": {"metadata": {"name": "x", "uid": "u3", "annotations": {"slurm-job.vk.io/flags": "--uid=0"}}, "spec": {"containers": [{"name": "a", "image": "busybox", "command": ["true"]}]}}}',
            422,
            "unknown sbatch option",
        ),
        (
            "/create",
            b'{"pod": {"metadata": {"name": "x", "uid": "u4"}, "spec": {"containers": [{"name": "a", "image": "busybox", "command": ["true"], "volumeMounts": [{"name": "v", "mountPath": "/m"}]}], "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}}, "container": [{"name": "a", "configMaps": [{"metadata": {"name": "cm"}, "data": {"..": "x"}}]}]}',
            422,
            "not a valid ConfigMap/Secret key",
        ),
        ("/delete", b'{"metadata": {"name": "x"}}', 400, "uid"),
        ("/delete", b"[1, 2]", 400, "v1.Pod"),
        ("/status", b'{"a": 1}', 400, "list"),
        ("/status", b'[{"metadata": {"uid": 5}}]', 422, "uid"),
        ("/getLogs", b'{"PodUID": "x", "Opts": {"Tail": 1, "Bytes": 1}}', 400, "Tail and LimitBytes"),
        (
            "/getLogs",
            b'{"PodUID": "x", "Opts": {"SinceSeconds": 1, "SinceTime": "2020-01-01T00:00:00Z"}}',
            400,
            "SinceSeconds and SinceTime",
        ),
        ("/getLogs", b'{"PodUID": "no-such-pod"}', 404, "not known"),
        ("/getLogs", b'{"Opts": {}}', 422, "PodUID"),
    ],
)
async def test_bad_input_gets_a_4xx_with_a_reason(sidecar, path, body, status, reason):
    code, text = await raw(sidecar, "POST", path, body)
    assert code == status, text
    assert reason in text
    # The daemon survived and still answers.
    assert (await raw(sidecar, "GET", "/healthz", b""))[0] == 200


async def test_logs_need_a_container_name_for_multi_container_pods(sidecar):
    p = pod(
        [{"name": "a", "image": "busybox", "command": ["true"]}, {"name": "b", "image": "busybox", "command": ["true"]}]
    )
    req = request_for(p)
    async with SidecarClient(sidecar.address) as client:
        await client.create(req)
        with pytest.raises(SidecarError) as info:
            await client.logs_text({"PodUID": req["pod"]["metadata"]["uid"], "Opts": {}})
        assert info.value.status == 400 and "choose one of: [a, b]" in info.value.message
        with pytest.raises(SidecarError) as info:
            await client.logs_text({"PodUID": req["pod"]["metadata"]["uid"], "ContainerName": "zz", "Opts": {}})
        assert info.value.status == 400


async def test_request_bodies_over_the_limit_are_refused(local_site, tmp_path):
    small = Sidecar(tmp_path / "small", {"listen": {"max_body_bytes": 4096}}).start()
    try:
        p = pod([{"name": "c", "image": "busybox", "command": ["echo", "x" * 10000]}])
        code, _text = await raw(small, "POST", "/create", json.dumps(request_for(p)).encode())
        assert code == 413
        assert not list(small.pods_root.glob("*")) if small.pods_root.exists() else True
    finally:
        small.stop()


async def test_injection_payloads_through_the_api_run_literally(sidecar):
    marker = Path("/tmp/ilp-rest-pwned")
    marker.unlink(missing_ok=True)
    payload = f"$(touch {marker}); `touch {marker}`; '\"; touch {marker}; echo \"'\n|& > {marker}"
    comment = payload.replace("\n", " ")
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", 'printf "%s" "$V"'],
                "env": [{"name": "V", "value": payload}],
            }
        ],
        annotations={"slurm-job.vk.io/flags": "--comment=" + shlex.quote(comment)},
    )
    req = request_for(p)
    async with SidecarClient(sidecar.address) as client:
        answer = await client.create(req)
        uid = req["pod"]["metadata"]["uid"]
        assert slurm("squeue", "-h", "--states=all", "-j", answer["PodJID"], "-o", "%k").rstrip("\n") == comment
        await run_until(client, uid, SUCCEEDED)
        text = await client.logs_text({"PodUID": uid, "ContainerName": "c", "Opts": {}})
    assert text.rstrip("\n") == payload
    assert not marker.exists()


# ------------------------------------------------------------------ Slurm semantics


async def test_gpu_pods_get_gres_and_see_their_gpus(sidecar):
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "echo gpus=$SLURM_GPUS_ON_NODE"],
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            }
        ]
    )
    req = request_for(p)
    async with SidecarClient(sidecar.address) as client:
        answer = await client.create(req)
        uid = answer["PodUID"]
        tres = slurm("squeue", "-h", "--states=all", "-j", answer["PodJID"], "-o", "%b")
        assert "gpu:1" in tres
        await run_until(client, uid, SUCCEEDED)
        assert await client.logs_text({"PodUID": uid, "ContainerName": "c", "Opts": {}}) == "gpus=1\n"


async def test_refused_sbatch_fails_the_pod_with_its_message(sidecar):
    p = pod([{"name": "c", "image": "busybox", "command": ["true"], "resources": {"limits": {"nvidia.com/gpu": 3}}}])
    req = request_for(p)
    async with SidecarClient(sidecar.address) as client:
        answer = await client.create(req)
        assert answer["PodJID"] == ""
        final = await run_until(client, answer["PodUID"], FAILED, timeout=10)
    term = final["containers"][0]["state"]["terminated"]
    assert term["reason"] == "SchedulerRejected"
    assert (
        term["message"].startswith("Slurm refused the job: ")
        and "Requested node configuration is not available" in term["message"]
    )


async def test_memory_over_the_limit_is_oom_killed(sidecar):
    p = pod(
        [
            {
                "name": "hog",
                "image": "python:3.11-alpine",
                "command": ["python3", "-c", "b = bytearray(300 * 1024 * 1024); print('survived')"],
                "resources": {"limits": {"memory": "64Mi"}},
            }
        ]
    )
    req = request_for(p)
    async with SidecarClient(sidecar.address) as client:
        answer = await client.create(req)
        final = await run_until(client, answer["PodUID"], FAILED)
    term = final["containers"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137


async def test_pending_reason_surfaces_and_delete_cancels(local_site, tmp_path):
    held = Sidecar(tmp_path / "held", {"slurm": {"flags": {"allow": ["--hold", "--time"]}}}).start()
    try:
        p = pod(
            [{"name": "c", "image": "busybox", "command": ["true"]}], annotations={"slurm-job.vk.io/flags": "--hold"}
        )
        req = request_for(p)
        async with SidecarClient(held.address) as client:
            answer = await client.create(req)

            async def held_waiting():
                [status] = await client.status([pod_ref(answer["PodUID"])])
                waiting = status["containers"][0]["state"].get("waiting", {})
                return waiting if waiting.get("reason") == "JobHeldUser" else None

            waiting = await wait_for(held_waiting, 30, what="JobHeldUser")
            assert waiting["message"].endswith(
                "is pending: JobHeldUser: held by its owner: release it, or delete the pod"
            )
            assert "deleting" in await client.delete(req["pod"])
            final = await run_until(client, answer["PodUID"], FAILED, timeout=30)
        assert final["containers"][0]["state"]["terminated"]["reason"] == "Cancelled"
        state = slurm("squeue", "-h", "--states=all", "-j", answer["PodJID"], "-o", "%T").strip()
        assert state == "CANCELLED"
    finally:
        held.stop()


async def test_delete_runs_pre_stop_and_ends_the_job(sidecar):
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "echo up; while true; do sleep 1; done"],
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo stopping > /tmp/prestop"]}}},
            }
        ],
        terminationGracePeriodSeconds=5,
    )
    req = request_for(p)
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(sidecar.address) as client:
        answer = await client.create(req)
        await run_until(client, uid, RUNNING)
        assert "deleting" in await client.delete(req["pod"])
        final = await run_until(client, uid, FAILED, timeout=60)
    assert final["containers"][0]["state"]["terminated"]["exitCode"] == 143
    rootfs = pod_dir(sidecar.pods_root, "ns", uid) / "containers" / "c" / "rootfs"
    assert (rootfs / "tmp" / "prestop").read_text() == "stopping\n"

    async def job_ended():  # the batch script may still be writing its last files
        state = slurm("squeue", "-h", "--states=all", "-j", answer["PodJID"], "-o", "%T").strip()
        return state if state in ("COMPLETED", "FAILED", "CANCELLED") else None

    await wait_for(job_ended, 30, what="the job to end")


async def test_metrics_count_scheduler_commands(sidecar):
    code, text = await raw(sidecar, "GET", "/metrics", b"")
    assert code == 200 and "ilp_status_cycle_seconds" in text and "ilp_pods" in text


async def test_time_limit_from_active_deadline_says_deadline_exceeded(sidecar):
    p = pod([{"name": "c", "image": "busybox", "command": ["sleep", "600"]}], activeDeadlineSeconds=30)
    req = request_for(p)
    async with SidecarClient(sidecar.address) as client:
        answer = await client.create(req)
        assert slurm("squeue", "-h", "-t", "all", "-j", answer["PodJID"], "-o", "%l").strip() == "1:00"
        final = await run_until(client, answer["PodUID"], FAILED, timeout=180)
    # The reason is right the first time the pod is seen Failed: the VK stops asking then.
    assert final["containers"][0]["state"]["terminated"]["reason"] == "DeadlineExceeded"
    assert "#SBATCH --signal=B:USR2@40" in (pod_dir(sidecar.pods_root, "ns", answer["PodUID"]) / "job.sh").read_text()


async def test_creates_beyond_max_pods_get_429_with_the_reason(local_site, tmp_path):
    """max_pods is enforced, not only reported: the third held pod of a site with two places gets
    429 and no directory or job; the Virtual Kubelet's capacity says 0 left."""
    full = Sidecar(tmp_path / "full", {"max_pods": 2, "slurm": {"flags": {"allow": ["--hold"]}}}).start()
    try:
        held = {"slurm-job.vk.io/flags": "--hold"}
        reqs = [
            request_for(pod([{"name": "c", "image": "busybox", "command": ["true"]}], annotations=held))
            for _ in range(3)
        ]
        async with SidecarClient(full.address) as client:
            for req in reqs[:2]:
                await client.create(req)
            code, text = await raw(full, "POST", "/create", json.dumps(reqs[2]).encode())
            assert code == 429, text
            assert "the site is full: 2 pods hold its 2 places (max_pods)" in text
            assert (await client.ping())["resources"]["pods"] == "0"
            third = reqs[2]["pod"]["metadata"]["uid"]
            assert not full.jobs_named(full.prefix + third)
            assert not list(full.pods_root.glob(f"*/ns/{third}"))
            for req in reqs[:2]:
                await client.delete(req["pod"])
    finally:
        full.stop()
    assert "refused POST /create" in full.log() and "429 the site is full" in full.log()
