"""Pod names at their limits through a real sidecar and the real local Slurm: the longest
name Kubernetes allows runs, with the kubelet's hostname."""

from __future__ import annotations

import pytest

from interlink_provider.cli.client import SidecarClient, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import FAILED, SUCCEEDED, phase_of
from tests.helpers import wait_for
from tests.podkit import pod

pytestmark = pytest.mark.slurm

# 253 characters, with dots; the kubelet's hostname is its first 63 without the trailing '.'
LONG_NAME = ".".join(["a" * 62, "b" * 63, "c" * 63, "d" * 62])
CUT = "a" * 62


def request_for(p: dict) -> dict:
    p = {**p, "spec": {**p["spec"], "automountServiceAccountToken": False}}
    return manifest.create_request(p, manifest.Manifests(), namespace="ns")


async def finished(client: SidecarClient, uid: str, timeout: float = 90) -> dict:
    async def ended():
        answers = await client.status([pod_ref(uid)])
        return answers[0] if answers and phase_of(answers[0]) in (SUCCEEDED, FAILED) else None

    return await wait_for(ended, timeout, what=f"pod {uid} finished")


async def test_a_253_character_name_runs_with_the_cut_hostname(sidecar):
    assert len(LONG_NAME) == 253
    command = 'hostname; echo "$HOSTNAME"; cat /proc/sys/kernel/hostname'
    p = pod([{"name": "c", "image": "busybox", "command": ["sh", "-c", command]}], name=LONG_NAME)
    req = request_for(p)
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(sidecar.address) as client:
        await client.create(req)
        final = await finished(client, uid)
        text = await client.logs_text({"PodUID": uid, "ContainerName": "c", "Opts": {}})
    assert phase_of(final) == SUCCEEDED, (final, text)
    assert final["name"] == LONG_NAME
    assert text.splitlines() == [CUT, CUT, CUT]
