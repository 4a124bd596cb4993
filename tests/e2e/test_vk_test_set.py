"""Replay of interLink's vk-test-set four times: on the real local Slurm through the
sidecar's REST plugin API (as the upstream interLink API server calls it) and
through our gateway (as the Virtual Kubelet calls the API) -> gRPC + TLS -> sidecar;
through the REST plugin API of a sidecar on the HTCondor backend (against the
HTCondor CLI emulator, tests/emulators/htcondor: no HTCondor daemons run here); and
on Slurm with the charliecloud runtime, every pod running the image it names, pulled
from the local site's registry (stand-ins built by deploy/local/images.sh).

Every template is rendered with the values interLink's own CI uses, its objects
are sent the way the Virtual Kubelet and interLink API would send them (Jobs are
expanded into pods and retried per backoffLimit, as the Job controller would),
and every `# VALIDATION` rule is applied: pod phases as the VK computes them from
our /status answers, and regexes over our /getLogs answers.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from interlink_provider.cli.client import SidecarClient, pod_ref
from interlink_provider.pods import manifest
from interlink_provider.pods.phase import FAILED, SUCCEEDED, phase_of
from tests.federation import GatewayProcess, as_vk_request, grpc_sidecar, wait_until_up
from tests.helpers import REPO, SERVICE_ACCOUNT, Sidecar, htcondor_overrides, pod_dir, site_dir

SUITE = Path(__file__).parent / "vk-test-set"
CONFIG = yaml.safe_load((SUITE / "config" / "interLink-ci-vktest_config.yaml").read_text())
TEMPLATES = sorted((SUITE / "templates").glob("*.yaml"))

# Templates that cannot pass on this machine, and why. Each is listed in README "Limitations".
EXCLUDED = {
    "060-init-container.yaml": "clones https://github.com/interTwin-eu/interLink: no outbound network to GitHub here",
    "070-rclone-bind.yaml": "needs an image with sshd and rclone, privileged FUSE mounts and Bidirectional mount propagation",
}
RUN = [t for t in TEMPLATES if t.name not in EXCLUDED]

# Single log checks that cannot pass, why, and the stronger check we make instead.
# Python block-buffers stdout into a pipe; the cgroup OOM killer's SIGKILL discards that
# buffer before it is written (as it would under Kubernetes with an enforced limit).
EXCLUDED_LOG_CHECKS = {
    ("100-failing-containers.yaml", "Attempting to allocate memory beyond limit"): "OOMKilled",
}


@dataclass
class Rendered:
    template: str
    manifests: manifest.Manifests
    validation: dict[str, Any]
    pods: list[dict[str, Any]] = field(default_factory=list)  # {"pod", "uid", "job", "attempt"}
    error: str = ""


def render(path: Path) -> tuple[str, dict[str, Any]]:
    text = path.read_text()
    values = {**CONFIG["values"], "uuid": str(uuid.uuid4()), "target_node": CONFIG["target_nodes"][0]}
    rendered = jinja2.Template(text).render(**values)
    body, _, validation = rendered.partition("# VALIDATION")
    return body, yaml.safe_load(validation) or {}


@dataclass
class Route:
    """Where the suite's requests go: `address` speaks the VK->API protocol when `gateway`."""

    address: str
    sidecar: Sidecar
    gateway: bool
    images: bool = False  # the pods run their own images (charliecloud): /tmp is the container's own


async def _create(client: SidecarClient, r: Rendered, pod: dict[str, Any], job=None, attempt: int = 1) -> None:
    request = manifest.create_request(pod, r.manifests, namespace=CONFIG["values"]["namespace"])
    if client.via_gateway:  # type: ignore[attr-defined]
        answer = await client.call("POST", "/create", as_vk_request(request))
    else:
        answer = await client.create(request)
    r.pods.append({"pod": request["pod"], "uid": answer["PodUID"], "job": job, "attempt": attempt})


async def submit(client: SidecarClient, path: Path) -> Rendered:
    body, validation = render(path)
    r = Rendered(path.name, manifest.load(body, CONFIG["values"]["namespace"]), validation)
    for pod in r.manifests.pods:
        await _create(client, r, pod)
    for job in r.manifests.jobs:
        await _create(client, r, job.make_pod(), job)
    return r


def _matching(r: Rendered, name: str) -> list[dict[str, Any]]:
    """A name ending with '-' names the pods of a Job (generated suffix)."""
    if name.endswith("-"):
        return [p for p in r.pods if p["pod"]["metadata"]["name"].startswith(name)]
    return [p for p in r.pods if p["pod"]["metadata"]["name"] == name]


async def _phases(client: SidecarClient, pods: list[dict[str, Any]]) -> dict[str, str]:
    refs = [pod_ref(p["uid"], p["pod"]["metadata"]["name"], p["pod"]["metadata"]["namespace"]) for p in pods]
    return {a["UID"]: phase_of(a) for a in await client.status(refs)}


async def _retry_failed_jobs(client: SidecarClient, r: Rendered, phases: dict[str, str]) -> None:
    """The Job controller's part: a failed pod is replaced while backoffLimit allows."""
    for entry in list(r.pods):
        job = entry["job"]
        if job is None or entry.get("replaced") or phases.get(entry["uid"]) != FAILED:
            continue
        if entry["attempt"] <= job.backoff_limit:
            entry["replaced"] = True
            await _create(client, r, job.make_pod(), job, entry["attempt"] + 1)


async def _container_states(client: SidecarClient, pods: list[dict[str, Any]]) -> dict[str, Any]:
    """What a failure message needs: each pod's container states, by pod name."""
    refs = [pod_ref(p["uid"], p["pod"]["metadata"]["name"], p["pod"]["metadata"]["namespace"]) for p in pods]
    return {
        a["name"]: {c["name"]: c["state"] for c in [*a.get("initContainers", []), *a.get("containers", [])]}
        for a in await client.status(refs)
    }


def _log_check(check: dict[str, Any], text: str) -> bool:
    matches = re.findall(check["regex"], text)
    operator = check.get("operator", "Exists")
    value = check.get("value")
    if operator == "Exists":
        return bool(matches)
    if operator == "CountAtLeast":
        return len(matches) >= int(value)
    if operator == "CountAtMost":
        return len(matches) <= int(value)
    if operator == "CountExactly":
        return len(matches) == int(value)
    if operator == "Is":
        return bool(matches) and str(matches[0]) == str(value)
    raise AssertionError(f"unknown operator {operator}")


async def validate(client: SidecarClient, r: Rendered) -> None:
    timeout = float(r.validation.get("timeout_seconds", 60)) * float(CONFIG.get("timeout_multiplier", 1))
    deadline = time.monotonic() + timeout
    pending_pods = list(r.validation.get("check_pods") or [])
    while pending_pods:
        phases = await _phases(client, r.pods)
        await _retry_failed_jobs(client, r, phases)
        still = []
        for check in pending_pods:
            wanted = check.get("status", SUCCEEDED)
            pods = [p for p in _matching(r, check["name"]) if not p.get("replaced")]
            assert pods, f"{r.template}: no pod named {check['name']}"
            seen = [phases.get(p["uid"], "Pending") for p in pods]
            if all(s == wanted for s in seen):
                continue
            wrong_terminal = [s for s in seen if s in (SUCCEEDED, FAILED) and s != wanted]
            if wrong_terminal:
                states = await _container_states(client, pods)
                raise AssertionError(
                    f"{r.template}: {check['name']} ended {wrong_terminal}, expected {wanted}: {states}"
                )
            still.append(check)
        pending_pods = still
        if pending_pods:
            if time.monotonic() >= deadline:
                states = await _container_states(client, [p for c in pending_pods for p in _matching(r, c["name"])])
                raise AssertionError(
                    f"{r.template}: pods not {[c.get('status', SUCCEEDED) for c in pending_pods]} "
                    f"after {timeout}s: {states}"
                )
            await asyncio.sleep(0.5)
    for check in r.validation.get("check_logs") or []:
        pods = _matching(r, check["name"])
        assert pods, f"{r.template}: no pod named {check['name']}"
        pod = pods[0]
        instead = EXCLUDED_LOG_CHECKS.get((r.template, check["regex"]))
        if instead is not None:
            await _check_reason(client, pod, check["container"], instead)
            continue
        query = {
            "Namespace": pod["pod"]["metadata"]["namespace"],
            "PodUID": pod["uid"],
            "PodName": pod["pod"]["metadata"]["name"],
            "ContainerName": check.get("container") or "",
            "Opts": {},
        }
        while True:
            text = await client.logs_text(query)
            if _log_check(check, text):
                break
            assert time.monotonic() < deadline, f"{r.template}: log check {check} failed on:\n{text}"
            await asyncio.sleep(0.5)


def charliecloud_overrides(cache: Path) -> dict[str, Any]:
    """The pods' own images from the local site's registry (deploy/local/images.sh builds the
    vk-test-set's images under their usual names), pulled into `cache`, run by ch-run."""
    registry = site_dir() / "registry"
    mirror = "127.0.0.1:" + os.environ.get("ILP_REGISTRY_PORT", "5443")
    return {
        "runtime": {"default": "charliecloud"},
        "images": {
            "cache_dir": str(cache),
            "mirrors": {"docker.io": mirror, "ghcr.io": mirror},
            "cert_dir": str(registry / "certs"),
        },
    }


@pytest.fixture(scope="module", params=["rest", "gateway", "htcondor", "charliecloud"])
def route(request, local_site, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"vk-test-set-{request.param}")
    if request.param in ("rest", "htcondor", "charliecloud"):
        # htcondor: the same REST plugin API, a sidecar on the HTCondor backend (emulated CLI);
        # charliecloud: the REST plugin API on Slurm, each pod running its own image
        overrides: dict[str, Any] = {}
        cache = None
        if request.param == "htcondor":
            overrides = htcondor_overrides(root, slots=32)
        elif request.param == "charliecloud":
            cache = Path(tempfile.mkdtemp(prefix="ilp-vk-images-", dir="/tmp"))
            account = pwd.getpwnam(SERVICE_ACCOUNT)
            os.chown(cache, account.pw_uid, account.pw_gid)
            os.chmod(cache, 0o755)
            overrides = charliecloud_overrides(cache)
        instance = Sidecar(root, overrides).start()
        yield Route(instance.address, instance, gateway=False, images=cache is not None)
        instance.wait_jobs_gone()
        instance.stop()
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
        return
    request.getfixturevalue("unix_accounts")
    idp = request.getfixturevalue("idp")
    site = grpc_sidecar(root / "site", idp)
    gateway = GatewayProcess(root / "gateway", idp, {"local": site}).start()
    asyncio.run(wait_until_up(gateway, 1))
    yield Route(gateway.address, site, gateway=True)
    site.wait_jobs_gone()
    gateway.stop()
    site.stop()
    shutil.rmtree(site.scratch, ignore_errors=True)


# The sandbox runtime shares the host's network: 090-probes' server binds :8080 without
# SO_REUSEADDR, so the next run's must wait for the last one's sockets to leave TIME_WAIT.
# It is created last, after the other templates, so that the wait overlaps their work.
PROBES_PORT = 8080
PROBES = "090-probes.yaml"


def _sockets_on(port: int) -> int:
    """TCP sockets (any state) whose local port is `port`, from /proc/net/tcp{,6}."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found += sum(1 for line in lines if int(line.split()[1].rsplit(":", 1)[1], 16) == port)
    return found


def wait_port_free(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while _sockets_on(port) and time.monotonic() < deadline:
        time.sleep(1)


def _client(route: Route) -> SidecarClient:
    client = SidecarClient(route.address)
    client.via_gateway = route.gateway  # type: ignore[attr-defined]
    return client


@pytest.fixture(scope="module")
def submitted(route):
    """Every template's objects created at once, as a cluster would see them arrive."""

    async def go() -> dict[str, Rendered]:
        async with _client(route) as client:
            out = {}
            for path in sorted(RUN, key=lambda p: p.name == PROBES):
                if path.name == PROBES:
                    await asyncio.to_thread(wait_port_free, PROBES_PORT)
                try:
                    out[path.name] = await submit(client, path)
                except Exception as exc:  # reported by the template's own test
                    out[path.name] = Rendered(path.name, manifest.Manifests(), {}, error=repr(exc))
            return out

    return asyncio.run(go())


@pytest.mark.slurm
@pytest.mark.parametrize("template", [t.name for t in RUN])
def test_template(template, submitted, route):
    r = submitted[template]
    assert not r.error, f"{template}: creation failed: {r.error}"

    async def go() -> None:
        async with _client(route) as client:
            try:
                await validate(client, r)
            finally:
                for entry in r.pods:  # clean_configs: the pods are deleted in every case
                    await client.delete(entry["pod"])
            # (with images, /tmp is a private tmpfs gone with the container: nothing to read after)
            if template == "115-lifecycle-hooks.yaml" and not route.images:
                await _check_prestop(route.sidecar, r)

    asyncio.run(go())


async def _check_reason(client: SidecarClient, pod: dict[str, Any], container: str, reason: str) -> None:
    meta = pod["pod"]["metadata"]
    [answer] = await client.status([pod_ref(pod["uid"], meta["name"], meta["namespace"])])
    states = {s["name"]: s["state"] for s in answer["containers"]}
    terminated = states[container].get("terminated") or {}
    assert terminated.get("reason") == reason, f"{meta['name']}/{container}: {states[container]}"


async def _check_prestop(sidecar: Sidecar, r: Rendered) -> None:
    """Beyond the template: deletion ran the preStop hook inside the container."""
    entry = r.pods[0]
    meta = entry["pod"]["metadata"]
    marker = (
        pod_dir(sidecar.pods_root, meta["namespace"], entry["uid"])
        / "containers"
        / "lifecycle-test"
        / "rootfs"
        / "tmp"
        / "prestop-marker"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if marker.exists() and "preStop hook completed" in marker.read_text():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"preStop hook did not complete: {marker}")


def test_exclusions_are_documented():
    readme = (REPO / "README.md").read_text()
    limitations = readme[readme.index("## Limitations") :]
    for template in [*EXCLUDED, *(t for t, _ in EXCLUDED_LOG_CHECKS)]:
        assert template.removesuffix(".yaml") in limitations, f"README Limitations must list {template}"
