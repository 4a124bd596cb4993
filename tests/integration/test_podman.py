"""The podman runtime (issue #19): a real sidecar pulls each pod's image from the test registry into
its image cache and submits the job to the real Slurm; the job runs the pinned rootfs with rootless
podman (runc) as the pod's account, with podman state of its own that it removes afterwards."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from interlink_provider.cli.client import SidecarClient, pod_ref
from interlink_provider.pods.phase import FAILED, RUNNING, SUCCEEDED
from tests import imagekit
from tests.helpers import pod_dir, wait_for
from tests.integration.test_charliecloud import cached_image_sidecar, changes_the_image_s_files, logs
from tests.integration.test_images import registry  # noqa: F401  (a fixture of this module)
from tests.integration.test_rest_api import request_for, run_until
from tests.podkit import pod

PODMAN = {"interlink.provider/runtime": "podman"}
TEST_GPUS = "/dev/ilp-podman-gpu"  # the sidecar's gpu_devices: device nodes standing for GPUs


@pytest.fixture
def podman_sidecar(local_site, registry, tmp_path):  # noqa: F811
    """A sidecar offering the podman runtime, with the test registry as docker.io's mirror."""
    images = {"mirrors": registry.mirrors(), "cert_dir": str(registry.cert_dir)}
    with cached_image_sidecar(registry.work, tmp_path, "podman", {"gpu_devices": [f"{TEST_GPUS}*"]}, images) as sidecar:
        yield sidecar


def podman_pod(name: str, containers: list[dict], **kwargs) -> dict:
    return request_for(pod(containers, name=name, annotations=PODMAN, **kwargs))


def terminated(answer: dict) -> dict[str, dict]:
    return {c["name"]: (c.get("state") or {}).get("terminated") or {} for c in answer["containers"]}


def leftovers(account: str) -> list[str]:
    """The account's podman processes (pause, conmon) and state directories still there."""
    found = subprocess.run(["pgrep", "-u", account, "-a", "catatonit|conmon"], capture_output=True, text=True)
    tmp = [str(p) for p in Path("/tmp").glob("ilp-podman.*") if p.owner() == account]
    return found.stdout.splitlines() + tmp


async def test_a_pod_runs_its_image_as_its_account_and_reports_exit_codes(podman_sidecar):
    """The image's Entrypoint, Cmd, Env and WorkingDir (ilp/entrypoint:1) and busybox's own files;
    what the container writes on a volume belongs to the pod's account; exit 3 is reported as 3."""
    evil = "$(touch /tmp/ilp-pwned) 'q' \"d\" a  b"
    req = podman_pod(
        "podman-images",
        [
            {"name": "entry", "image": "ilp/entrypoint:1"},
            {"name": "args", "image": "ilp/entrypoint:1", "args": ["from-pod"], "env": [{"name": "X", "value": "1"}]},
            {
                "name": "env",
                "image": "ilp/entrypoint:1",
                "command": ["sh", "-c", 'echo "$GREETING|$EVIL"; pwd'],
                "env": [{"name": "EVIL", "value": evil}],
            },
            {
                "name": "shell",
                "image": "busybox",
                "command": [
                    "sh",
                    "-c",
                    "test -e /etc/passwd && test ! -e /etc/debian_version && echo not-the-host; id -u; "
                    "echo written > /data/out; exit 3",
                ],
                "workingDir": "/data",
                "volumeMounts": [{"name": "scratch", "mountPath": "/data"}],
            },
        ],
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(podman_sidecar.address) as client:
        await client.create(req)
        final = await run_until(client, uid, FAILED, timeout=120)
        assert (await logs(client, req, "entry")).split() == ["from-entrypoint", "default-arg"]
        assert (await logs(client, req, "args")).split() == ["from-entrypoint", "from-pod"]
        assert (await logs(client, req, "env")).splitlines() == [f"image|{evil}", "/work"]
        assert (await logs(client, req, "shell")).split() == ["not-the-host", "0"]
        codes = {name: state.get("exitCode") for name, state in terminated(final).items()}
        assert codes == {"entry": 0, "args": 0, "env": 0, "shell": 3}
        directory = pod_dir(podman_sidecar.pods_root, "ns", uid)
        out = directory / "volumes" / "scratch" / "out"
        assert out.read_text() == "written\n"
        account = directory.owner()
        assert out.owner() == account and out.group() == directory.group()
        assert await client.delete(req["pod"])
    assert not Path("/tmp/ilp-pwned").exists()

    async def clean():
        return not leftovers(account)

    await wait_for(clean, 20, what=f"no podman process or state of {account} left")


async def test_a_deleted_pod_is_terminated_and_probes_and_hooks_run_inside_it(podman_sidecar):
    """A postStart hook writes a file in the container's /tmp and an exec readiness probe reads it
    (podman exec with the container's own state); a delete TERMs the container, reported as for
    the other runtimes, and leaves no podman process or state behind."""
    req = podman_pod(
        "podman-delete",
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "echo up; while true; do sleep 1; done"],
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/hooked"]}, "periodSeconds": 1},
                "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo hooked > /tmp/hooked"]}}},
            }
        ],
        terminationGracePeriodSeconds=10,
    )
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(podman_sidecar.address) as client:
        await client.create(req)
        await run_until(client, uid, RUNNING, timeout=120)

        async def ready():
            answer = (await client.status([pod_ref(uid)]))[0]
            containers = answer.get("containers") or []
            return answer if containers and containers[0].get("ready") else None

        await wait_for(ready, 60, what="ready")
        assert "deleting" in await client.delete(req["pod"])
        final = await run_until(client, uid, FAILED, timeout=60)
    assert terminated(final)["c"]["exitCode"] == 143
    account = pod_dir(podman_sidecar.pods_root, "ns", uid).owner()

    async def clean():
        return not leftovers(account)

    await wait_for(clean, 20, what=f"no podman process or state of {account} left")


async def test_a_container_changes_the_image_s_files_in_a_layer_of_its_own(podman_sidecar):
    """The image's files are the container's to change (podman's fuse-overlayfs layer over the cache)."""
    await changes_the_image_s_files(podman_sidecar, PODMAN)


async def test_only_a_container_that_asks_for_gpus_gets_the_gpu_devices(podman_sidecar):
    """--device for the site's gpu_devices only with GPUs; podman gives the others a /dev without them."""
    device = Path(f"{TEST_GPUS}{os.getpid()}")
    subprocess.run(["mknod", "-m", "666", str(device), "c", "1", "3"], check=True)  # as /dev/null
    try:
        command = ["sh", "-c", f"test -c {device} && echo present; echo end"]
        plain = podman_pod("podman-plain", [{"name": "c", "image": "busybox", "command": command}])
        limits = {"limits": {"nvidia.com/gpu": 1}}
        gpu = podman_pod("podman-gpu", [{"name": "c", "image": "busybox", "command": command, "resources": limits}])
        async with SidecarClient(podman_sidecar.address) as client:
            for req in (plain, gpu):
                await client.create(req)
            for req in (plain, gpu):
                await run_until(client, req["pod"]["metadata"]["uid"], SUCCEEDED, timeout=120)
            assert (await logs(client, plain, "c")).split() == ["end"]
            assert (await logs(client, gpu, "c")).split() == ["present", "end"]
    finally:
        device.unlink()


async def test_an_image_user_runs_as_the_pods_account(podman_sidecar, registry):  # noqa: F811
    """The image's User (runner, 1000:1001 in its own /etc/passwd) is who the process is inside;
    on the host, what it writes on a volume belongs to the pod's account (keep-id)."""
    imagekit.push_user_image(registry.host, registry.cert_dir, "ilp/user:1")
    command = ["sh", "-c", "id -u; id -g; echo written > /data/out"]
    mounts = [{"name": "scratch", "mountPath": "/data"}]
    req = podman_pod(
        "podman-user",
        [{"name": "c", "image": "ilp/user:1", "command": command, "volumeMounts": mounts}],
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(podman_sidecar.address) as client:
        await client.create(req)
        await run_until(client, uid, SUCCEEDED, timeout=120)
        assert (await logs(client, req, "c")).split() == ["1000", "1001"]
        directory = pod_dir(podman_sidecar.pods_root, "ns", uid)
        out = directory / "volumes" / "scratch" / "out"
        assert out.read_text() == "written\n" and out.owner() == directory.owner()
