"""A full working area (a real 512 KiB tmpfs as pods_root): the pod that does not fit is refused
with the reason and leaves nothing behind; the sidecar, its store and the other pods carry on."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import SUCCEEDED
from tests.helpers import Sidecar, traversable_dir
from tests.integration.test_rest_api import run_until

pytestmark = pytest.mark.slurm


@pytest.fixture
def small_disk(tmp_path):
    mount = traversable_dir(tmp_path) / "small"  # the pods' account must reach it
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0711", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def with_config(name: str, size: int) -> dict:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "blob", "namespace": "disk"},
        "data": {"blob": "x" * size},
    }
    pod = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "volumes": [{"name": "b", "configMap": {"name": "blob"}}],
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", "wc -c < /b/blob"],
                    "volumeMounts": [{"name": "b", "mountPath": "/b"}],
                }
            ],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(config_maps={("disk", "blob"): config}), namespace="disk")


async def test_a_full_disk_refuses_the_pod_clearly_and_keeps_the_rest(local_site, tmp_path, small_disk):
    sidecar = Sidecar(tmp_path / "s", {"pods_root": str(small_disk / "pods")}).start()
    try:
        big, small = with_config("big", 2 * 1024 * 1024), with_config("small", 1000)
        async with SidecarClient(sidecar.address) as client:
            with pytest.raises(SidecarError) as refused:
                await client.create(big)
            assert refused.value.status == 503 and "No space left on device" in refused.value.message
            assert not list((small_disk / "pods").rglob(f"*{big['pod']['metadata']['uid']}*"))  # nothing left
            assert await client.status([pod_ref(big["pod"]["metadata"]["uid"])]) == []
            await client.create(small)
            await run_until(client, small["pod"]["metadata"]["uid"], SUCCEEDED)
            log = await client.logs_text(
                {"PodUID": small["pod"]["metadata"]["uid"], "Namespace": "disk", "ContainerName": "c", "Opts": {}}
            )
        assert log.strip() == "1000"
        sidecar.stop()
        sidecar.start()  # the store survived the refusals intact
        async with SidecarClient(sidecar.address) as client:
            pods = {p["name"]: p for p in await client.pods()}
        assert set(pods) == {"small"} and pods["small"]["phase"] == "Succeeded"
    finally:
        sidecar.stop()
        shutil.rmtree(small_disk / "pods", ignore_errors=True)
