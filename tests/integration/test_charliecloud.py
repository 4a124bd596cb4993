"""Pods that run their own images (issue #19): a real sidecar (as the service account, with agents)
pulls each pod's image from a real registry (CNCF Distribution, TLS from its own CA) into its
image cache, pins the containers to digests, and submits the job to the real Slurm; the job runs
the image with Charliecloud's ch-run as the pod's account, offline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interlink_provider.cli.client import SidecarClient, pod_ref
from interlink_provider.pods.phase import PENDING, SUCCEEDED, phase_of
from tests import imagekit
from tests.helpers import SERVICE_ACCOUNT, Sidecar, ensure_site_accounts, pod_dir, slurm, wait_for
from tests.integration.test_images import (  # this module's registries
    IMAGES_SCRIPT,
    PRIVATE_PASSWORD,
    PRIVATE_USER,
    TEST_IMAGES,
    private_registry,
    registry,
)
from tests.integration.test_rest_api import request_for, run_until
from tests.podkit import pod

CHARLIECLOUD = {"interlink.provider/runtime": "charliecloud"}
TEST_GPUS = "/dev/ilp-test-gpu"  # the image sidecar's gpu_devices: files standing for GPU devices


@contextlib.contextmanager
def cached_image_sidecar(
    work: Path, tmp_path: Path, runtime: str, runtime_config: dict, images: dict, **overrides: Any
) -> Iterator[Sidecar]:
    """A sidecar offering `runtime`, with an image cache of its own (its account's) under `work`;
    `images`: the rest of its `images` section (mirrors, cert_dir); `overrides`: other sections."""
    ensure_site_accounts()
    cache = work / "caches" / f"{runtime}-{os.getpid()}-{abs(hash(str(tmp_path))) % 10**6}"
    cache.mkdir(parents=True)
    os.chmod(cache.parent, 0o755)
    account = pwd.getpwnam(SERVICE_ACCOUNT)
    os.chown(cache, account.pw_uid, account.pw_gid)
    overrides = {
        "runtime": {"allowed": ["sandbox", runtime], runtime: runtime_config},
        "images": {"cache_dir": str(cache), **images},
        **overrides,
    }
    instance = Sidecar(tmp_path / "sidecar", overrides).start()
    instance.cache = cache
    try:
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def image_sidecar(local_site, registry, tmp_path):
    """A sidecar offering the charliecloud runtime, with the test registry as docker.io's mirror."""
    images = {"mirrors": registry.mirrors(), "cert_dir": str(registry.cert_dir)}
    with cached_image_sidecar(
        registry.work, tmp_path, "charliecloud", {"gpu_devices": [f"{TEST_GPUS}*"]}, images
    ) as instance:
        yield instance


def image_pod(name: str, containers: list[dict], **kwargs) -> dict:
    return request_for(
        pod(containers, name=name, annotations={**CHARLIECLOUD, **kwargs.pop("annotations", {})}, **kwargs)
    )


async def logs(client: SidecarClient, req: dict, container: str) -> str:
    meta = req["pod"]["metadata"]
    return await client.logs_text({"PodUID": meta["uid"], "Namespace": meta["namespace"], "ContainerName": container})


async def waiting_with(client: SidecarClient, uid: str, reason: str, timeout: float = 30) -> dict:
    """The pod's status once its only container waits with `reason`."""

    async def reached():
        answer = (await client.status([pod_ref(uid)]))[0]
        return answer if waiting_reasons(answer) == [reason] else None

    return await wait_for(reached, timeout, what=reason)


def waiting_reasons(answer: dict) -> list[str]:
    return [(c.get("state") or {}).get("waiting", {}).get("reason", "") for c in answer.get("containers") or []]


async def test_a_pod_runs_its_image_entrypoint_env_workdir_and_files(image_sidecar):
    """The image's own Entrypoint, Cmd, Env and WorkingDir (ilp/entrypoint:1), and busybox's own
    filesystem (its /etc holds only passwd and group, unlike the host's), run as the job's account."""
    req = image_pod(
        "images",
        [
            {"name": "entry", "image": "ilp/entrypoint:1"},
            {"name": "args", "image": "ilp/entrypoint:1", "args": ["from-pod"]},
            {
                "name": "shell",
                "image": "busybox",
                "command": [
                    "sh",
                    "-c",
                    "ls /etc; test ! -e /etc/debian_version && echo not-the-host; echo $GREETING; "
                    "pwd; id -u; echo written > /data/out",
                ],
                "env": [{"name": "GREETING", "value": "pod"}],
                "workingDir": "/data",
                "volumeMounts": [{"name": "scratch", "mountPath": "/data"}],
            },
        ],
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(image_sidecar.address) as client:
        await client.create(req)
        await run_until(client, uid, SUCCEEDED, timeout=120)
        entry = await logs(client, req, "entry")
        args = await logs(client, req, "args")
        shell = await logs(client, req, "shell")
    assert entry.split() == ["from-entrypoint", "default-arg"]
    assert args.split() == ["from-entrypoint", "from-pod"]
    assert shell.split() == ["group", "passwd", "not-the-host", "pod", "/data", "0"]
    pins = list((image_sidecar.cache / "pins").glob("*/*.sh"))
    assert {p.parent.name for p in pins} <= {uid}


async def changes_the_image_s_files(sidecar: Sidecar, annotations: dict[str, str]) -> dict:
    """A pod whose init container edits, adds and removes files of busybox's image and whose next
    container looks at them, run on `sidecar`: the changes stay in the changing container's own
    layer (the cache's image is as before, and the next container sees it so). Its request."""
    change = "echo added >> /etc/passwd && echo new > /etc/new && rm /bin/true && mkdir -p /opt/x && ls /etc"
    look = "ls /etc | grep -v -e hostname -e hosts -e mtab -e resolv.conf; tail -1 /etc/passwd; test -e /bin/true"
    req = request_for(
        pod(
            [{"name": "see", "image": "busybox", "command": ["sh", "-c", look]}],
            init=[{"name": "change", "image": "busybox", "command": ["sh", "-c", change]}],
            name="writable",
            annotations=annotations,
        )
    )
    async with SidecarClient(sidecar.address) as client:
        await client.create(req)
        await run_until(client, req["pod"]["metadata"]["uid"], SUCCEEDED, timeout=120)
        assert {"group", "new", "passwd"} <= set((await logs(client, req, "change")).split())
        see = (await logs(client, req, "see")).split()
    [rootfs] = list((sidecar.cache / "images").glob("*/rootfs"))
    assert see == ["group", "passwd", (rootfs / "etc" / "passwd").read_text().split()[-1]]
    assert not (rootfs / "etc" / "new").exists() and (rootfs / "bin" / "true").exists()
    return req


async def test_a_container_changes_the_image_s_files_in_a_layer_of_its_own(image_sidecar):
    """As under a kubelet, the image's files are the container's to change (fuse-overlayfs); no
    fuse-overlayfs outlives its container."""
    req = await changes_the_image_s_files(image_sidecar, CHARLIECLOUD)
    containers = pod_dir(image_sidecar.pods_root, "ns", req["pod"]["metadata"]["uid"]) / "containers"
    scratches = [p.read_text().strip() for p in containers.glob("*/ch_scratch")]
    assert len(scratches) == 2 and not any(Path(s).exists() for s in scratches)
    serving = subprocess.run(["pgrep", "-a", "fuse-overlayfs"], capture_output=True, text=True).stdout
    assert not any(f"upperdir={s}/upper," in serving for s in scratches), serving


async def test_an_unknown_tag_waits_with_err_image_pull_and_the_registry_s_words(image_sidecar):
    req = image_pod("unknown", [{"name": "c", "image": "busybox:no-such-tag", "command": ["true"]}])
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(image_sidecar.address) as client:
        await client.create(req)

        answer = await waiting_with(client, uid, "ErrImagePull")
        assert "manifest unknown" in answer["containers"][0]["state"]["waiting"]["message"]
        assert phase_of(answer) == PENDING

        answer = await waiting_with(client, uid, "ImagePullBackOff")
        message = answer["containers"][0]["state"]["waiting"]["message"]
        assert message.startswith('Back-off pulling image "busybox:no-such-tag"') and "manifest unknown" in message
        assert await client.delete(req["pod"])
        assert not list(image_sidecar.pods_root.rglob("job.sh.*"))  # nothing was submitted
        assert not (image_sidecar.cache / "pins" / uid).exists()

        # a digest the registry does not hold: the same, in the registry's words
        wrong = image_pod("wrong-digest", [{"name": "c", "image": f"busybox@sha256:{'0' * 64}", "command": ["true"]}])
        await client.create(wrong)
        answer = await waiting_with(client, wrong["pod"]["metadata"]["uid"], "ErrImagePull")
        assert "manifest unknown" in answer["containers"][0]["state"]["waiting"]["message"]
        assert await client.delete(wrong["pod"])


async def test_an_invalid_image_name_is_shown_and_not_retried(image_sidecar):
    req = image_pod("invalid", [{"name": "c", "image": "busybox:bad:tag", "command": ["true"]}])
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(image_sidecar.address) as client:
        await client.create(req)

        await waiting_with(client, uid, "InvalidImageName")
        await client.delete(req["pod"])


async def test_probes_and_hooks_run_inside_the_running_container(image_sidecar):
    """An exec readiness probe reads a file the container wrote in its private /tmp, and a
    postStart hook writes one there: both join the container's namespaces, its hostname too."""
    req = image_pod(
        "probes",
        [
            {
                "name": "c",
                "image": "busybox",
                "command": ["sh", "-c", "echo ok > /tmp/ready; sleep 4; cat /tmp/hooked; hostname"],
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
                "lifecycle": {
                    "postStart": {"exec": {"command": ["sh", "-c", "echo hooked $(hostname) > /tmp/hooked"]}}
                },
            }
        ],
    )
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(image_sidecar.address) as client:
        await client.create(req)

        async def ready():
            answer = (await client.status([pod_ref(uid)]))[0]
            containers = answer.get("containers") or []
            return answer if containers and containers[0].get("ready") else None

        await wait_for(ready, 60, what="ready")
        await run_until(client, uid, SUCCEEDED, timeout=60)
        hooked, hostname = (await logs(client, req, "c")).strip().split("\n")
        assert hostname == req["pod"]["metadata"]["name"] != socket.gethostname()
        assert hooked == f"hooked {hostname}"


async def test_only_a_container_that_asks_for_gpus_sees_the_gpu_devices(image_sidecar):
    """ch-run shows the host's whole /dev: the site's gpu_devices are covered for the others. The
    local Slurm's GPUs are GRES files, so a file in /dev stands for the device here."""
    device = Path(f"{TEST_GPUS}{os.getpid()}")
    device.write_text("gpu-memory\n")
    device.chmod(0o666)
    try:
        command = ["sh", "-c", f"cat {device}; echo end"]
        plain = image_pod("plain", [{"name": "c", "image": "busybox", "command": command}])
        gpu = image_pod(
            "gpu",
            [{"name": "c", "image": "busybox", "command": command, "resources": {"limits": {"nvidia.com/gpu": 1}}}],
        )
        async with SidecarClient(image_sidecar.address) as client:
            for req in (plain, gpu):
                await client.create(req)
            for req in (plain, gpu):
                await run_until(client, req["pod"]["metadata"]["uid"], SUCCEEDED, timeout=120)
            assert (await logs(client, plain, "c")).split() == ["end"]  # /dev/null there
            assert (await logs(client, gpu, "c")).split() == ["gpu-memory", "end"]
    finally:
        device.unlink()


async def test_twenty_pods_of_one_image_pull_it_once_and_run_with_the_registry_stopped(image_sidecar, registry):
    digest, manifest = registry.manifest("ilp/entrypoint", "1")
    blobs = sorted([manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]])
    since = registry.log_offset()
    reqs = [image_pod(f"many-{i}", [{"name": "c", "image": "ilp/entrypoint:1", "args": [str(i)]}]) for i in range(20)]
    async with SidecarClient(image_sidecar.address) as client:
        await asyncio.gather(*(client.create(req) for req in reqs))
        for req in reqs:
            await run_until(client, req["pod"]["metadata"]["uid"], SUCCEEDED, timeout=180)
        assert sorted(registry.blob_gets("ilp/entrypoint", since)) == blobs  # one download for 20 pods
        for i, req in enumerate(reqs[:3]):
            assert (await logs(client, req, "c")).split() == ["from-entrypoint", str(i)]
        [answer] = await client.status([pod_ref(reqs[0]["pod"]["metadata"]["uid"])])
        assert answer["containers"][0]["imageID"] == f"docker.io/ilp/entrypoint@{digest}"  # as a kubelet says
        # The registry gone: a pod of a cached image (IfNotPresent) still runs, offline.
        env = {
            **os.environ,
            "ILP_SITE_DIR": str(registry.work / "site"),
            "ILP_REGISTRY_PORT": registry.host.rsplit(":", 1)[1],
            **TEST_IMAGES,
        }
        subprocess.run(["bash", str(IMAGES_SCRIPT), "stop"], env=env, check=True, capture_output=True)
        try:
            req = image_pod("offline", [{"name": "c", "image": "ilp/entrypoint:1", "imagePullPolicy": "IfNotPresent"}])
            await client.create(req)
            await run_until(client, req["pod"]["metadata"]["uid"], SUCCEEDED, timeout=120)
            assert (await logs(client, req, "c")).split() == ["from-entrypoint", "default-arg"]
            # ... while one that must ask the registry (Always) cannot
            req = image_pod("always", [{"name": "c", "image": "ilp/entrypoint:1", "imagePullPolicy": "Always"}])
            await client.create(req)
            uid = req["pod"]["metadata"]["uid"]

            answer = await waiting_with(client, uid, "ErrImagePull")
            assert "connection refused" in answer["containers"][0]["state"]["waiting"]["message"]
            await client.delete(req["pod"])
        finally:
            subprocess.run(["bash", str(IMAGES_SCRIPT), "start"], env=env, check=True, capture_output=True)


@pytest.fixture
def isolated_sidecar(local_site, registry, tmp_path):
    """A charliecloud sidecar whose jobs go to the local site's isolated node (partition isolated:
    a network namespace of its own, with slurmctld's port and nothing else of the login node's)."""
    images = {"mirrors": registry.mirrors(), "cert_dir": str(registry.cert_dir)}
    with cached_image_sidecar(
        registry.work, tmp_path, "charliecloud", {}, images, slurm={"partition": "isolated"}
    ) as instance:
        yield instance


async def test_a_pod_runs_on_a_node_with_no_route_to_the_registry(isolated_sidecar, registry):
    """The image is pulled on the login node; the job runs on a compute node that cannot reach the
    registry at all (nor anything else the login node serves on its loopback), from the cache."""
    port = int(registry.host.rsplit(":", 1)[1])
    probe = f"nc -w 3 127.0.0.1 {port} </dev/null 2>&1; echo nc=$?; ip route"  # busybox's wget crashes here
    req = image_pod(
        "no-route",
        [
            {"name": "entry", "image": "ilp/entrypoint:1"},
            {"name": "probe", "image": "busybox", "command": ["sh", "-c", probe]},
        ],
    )
    uid = req["pod"]["metadata"]["uid"]
    async with SidecarClient(isolated_sidecar.address) as client:
        await client.create(req)
        await run_until(client, uid, SUCCEEDED, timeout=120)
        assert (await logs(client, req, "entry")).split() == ["from-entrypoint", "default-arg"]
        probed = await logs(client, req, "probe")
    [job] = isolated_sidecar.jobs_named(isolated_sidecar.prefix + uid)
    assert slurm("squeue", "-h", "--states=all", "-j", job, "-o", "%N").strip() == "isolated1"
    assert "Connection refused" in probed and "nc=1" in probed, probed  # nothing there on 127.0.0.1
    routes = [line for line in probed.splitlines() if " dev " in line]
    assert routes and all(line.startswith("10.251.0.0/30 ") for line in routes), probed  # no default route
    # ... while the login node reaches the same registry: it is up.
    assert subprocess.run(["curl", "-sk", "-o", "/dev/null", f"https://{registry.host}/v2/"]).returncode == 0


async def test_a_sidecar_killed_mid_download_resumes_the_pull_and_submits_once(image_sidecar, registry):
    """SIGKILL while skopeo is downloading a 96 MiB image (its work directory is in the cache's
    tmp/): the restarted sidecar sweeps the partial download, pulls again, and the pod runs from
    an intact image, submitted once. The image is minimal (no /etc, /dev, /proc, /sys, /tmp)."""
    imagekit.push_random_image(registry.host, registry.cert_dir, "ilp/big:96", 96)
    req = image_pod(
        "killed",
        [{"name": "c", "image": "ilp/big:96", "command": ["sh", "-c", "cat /data/random.bin | wc -c"]}],
    )
    uid = req["pod"]["metadata"]["uid"]
    tmp = image_sidecar.cache / "tmp"
    async with SidecarClient(image_sidecar.address) as client:
        await client.create(req)

        async def downloading():
            return [p for p in tmp.iterdir() if p.name.startswith("pull-")] if tmp.exists() else []

        await wait_for(downloading, 30, interval=0.01, what="a download under way")
    image_sidecar.kill()
    assert not list((image_sidecar.cache / "images").iterdir())  # nothing half-published
    image_sidecar.start()
    async with SidecarClient(image_sidecar.address) as client:
        await run_until(client, uid, SUCCEEDED, timeout=120)
        assert (await logs(client, req, "c")).split() == [str(96 * 2**20)]
    assert [p.name for p in tmp.iterdir()] == []
    assert len(list((image_sidecar.cache / "images").iterdir())) == 1
    assert len(image_sidecar.jobs_named(image_sidecar.prefix + uid)) == 1


@pytest.fixture
def private_sidecar(local_site, registry, private_registry, tmp_path):
    """A charliecloud sidecar trusting both test registries' CAs, with no mirrors: pods name the
    private registry's host themselves."""
    ensure_site_accounts()
    cache = registry.work / "caches" / f"private-{os.getpid()}-{abs(hash(str(tmp_path))) % 10**6}"
    certs = cache.with_name(cache.name + "-certs")
    certs.mkdir(parents=True)
    shutil.copy(registry.cert_dir / "ca.crt", certs / "ca.crt")
    shutil.copy(private_registry.cert_dir / "ca.crt", certs / "private.crt")
    cache.mkdir()
    account = pwd.getpwnam(SERVICE_ACCOUNT)
    os.chown(cache, account.pw_uid, account.pw_gid)
    overrides = {
        "runtime": {"allowed": ["sandbox", "charliecloud"]},
        "images": {"cache_dir": str(cache), "cert_dir": str(certs)},
    }
    instance = Sidecar(tmp_path / "sidecar", overrides).start()
    instance.cache = cache
    yield instance
    instance.stop()
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(certs, ignore_errors=True)


def pull_secret(name: str, host: str, password: str) -> dict:
    config = {"auths": {host: {"username": PRIVATE_USER, "password": password}}}
    encoded = base64.b64encode(json.dumps(config).encode()).decode()
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": encoded},
    }


async def test_a_private_image_needs_the_pod_s_pull_secret(private_sidecar, private_registry):
    image = f"{private_registry.host}/ilp/entrypoint:1"
    refused, wrong, allowed = (
        image_pod(name, [{"name": "c", "image": image, "imagePullPolicy": "Always"}], imagePullSecrets=secrets)
        for name, secrets in (("anonymous", []), ("wrong", [{"name": "creds"}]), ("allowed", [{"name": "creds"}]))
    )
    wrong["container"][0]["secrets"] = [pull_secret("creds", private_registry.host, "not-the-password")]
    allowed["container"][0]["secrets"] = [pull_secret("creds", private_registry.host, PRIVATE_PASSWORD)]
    async with SidecarClient(private_sidecar.address) as client:
        for req in (refused, wrong):
            await client.create(req)
            uid = req["pod"]["metadata"]["uid"]

            answer = await waiting_with(client, uid, "ErrImagePull")
            message = answer["containers"][0]["state"]["waiting"]["message"]
            assert "unauthorized" in message or "authentication required" in message
            await client.delete(req["pod"])
        await client.create(allowed)
        uid = allowed["pod"]["metadata"]["uid"]
        await run_until(client, uid, SUCCEEDED, timeout=120)
        assert (await logs(client, allowed, "c")).split() == ["from-entrypoint", "default-arg"]
    # the password is in no file the sidecar kept, nor in its log
    kept = [
        p for p in private_sidecar.workdir.rglob("*") if p.is_file() and PRIVATE_PASSWORD.encode() in p.read_bytes()
    ]
    assert kept == []
    assert PRIVATE_PASSWORD not in private_sidecar.log_path.read_text()
    assert list((private_sidecar.workdir / "state" / "pull-secrets").iterdir()) == []


@pytest.fixture
def gang_image_sidecar(local_site, registry, tmp_path):
    """A charliecloud sidecar whose jobs may span both local nodes (partition all), for gangs."""
    images = {"mirrors": registry.mirrors(), "cert_dir": str(registry.cert_dir)}
    with cached_image_sidecar(
        registry.work, tmp_path, "charliecloud", {}, images, slurm={"partition": "all"}
    ) as instance:
        yield instance


async def test_a_gang_of_image_pods_meets_across_the_nodes_from_the_cache(gang_image_sidecar):
    """Each member pulls its image on the login node, waits for its gang, and runs from the cache on
    a node of its own, rank 0 on the isolated node: the members' own busybox nc meet there."""
    gang = {"interlink.provider/gang": "nc", "interlink.provider/gang-size": "2"}
    serve = 'nc -l -p "$MASTER_PORT" | sed "s/^/rank $RANK of $WORLD_SIZE got: /"'
    meet = 'until echo "hello from rank $RANK" | nc "$MASTER_ADDR" "$MASTER_PORT"; do sleep 0.2; done'
    reqs = [
        image_pod(
            f"nc-{rank}",
            [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
            annotations={**gang, "batch.kubernetes.io/job-completion-index": str(rank)},
        )
        for rank, script in enumerate((serve, meet))
    ]
    async with SidecarClient(gang_image_sidecar.address) as client:
        for req in reqs:
            await client.create(req)
        finals = [await run_until(client, r["pod"]["metadata"]["uid"], SUCCEEDED, timeout=120) for r in reqs]
        assert (await logs(client, reqs[0], "c")).strip() == "rank 0 of 2 got: hello from rank 1"
    [job] = {final["JID"] for final in finals}
    assert slurm("squeue", "-h", "--states=all", "-j", job, "-o", "%N").strip() == "isolated1,localhost"
