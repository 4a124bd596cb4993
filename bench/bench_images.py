"""Image benchmark on the embedded local site (Slurm, the registry of deploy/local/images.sh).
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_images.py [--size-mib 200] [--pods 20] [--runtime charliecloud|podman]

1. An image of about --size-mib (busybox and a file of random bytes, so compression cannot
   shrink the download) is built and pushed to the local registry once (ilp/bench-big:<size>).
2. First pull against a cache hit: create -> Running of a pod of that image on a sidecar whose
   image cache is empty, then of a second pod of the same image (IfNotPresent).
3. --pods pods of that image created at once on another sidecar with an empty cache: the bytes
   the registry served for them (its access log), against the image's own size.
Each sidecar runs as the service account with the --runtime given; everything it created
is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from interlink_provider.cli.client import SidecarClient, pod_ref  # noqa: E402
from interlink_provider.pods import manifest  # noqa: E402
from interlink_provider.pods.phase import FAILED, RUNNING, SUCCEEDED, phase_of  # noqa: E402
from tests import imagekit  # noqa: E402
from tests.helpers import SERVICE_ACCOUNT, SITE_SCRIPT, Sidecar, ensure_site_accounts, site_dir  # noqa: E402

IMAGES = REPO / "deploy" / "local" / "images.sh"
REGISTRY = "127.0.0.1:" + os.environ.get("ILP_REGISTRY_PORT", "5443")
ACCESS = re.compile(rb'"GET /v2/(?P<repo>[^ ]+)/blobs/[^ ]+ HTTP/[0-9.]+" 200 (?P<bytes>[0-9]+) ')


def registry_dir() -> Path:
    return site_dir() / "registry"


def build_big_image(size_mib: int) -> str:
    """ilp/bench-big:<size> in the local registry (built once): its reference."""
    ref = f"ilp/bench-big:{size_mib}"
    builder = registry_dir() / "builder-auth.json"  # site.sh's: only the builder pushes there
    imagekit.push_random_image(REGISTRY, registry_dir() / "certs", ref, size_mib, builder if builder.exists() else None)
    return ref


def pod_request(name: str, image: str, policy: str = "IfNotPresent") -> dict:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "annotations": {}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": policy, "command": ["sleep", "3"]}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="bench")


def image_sidecar(root: Path, runtime: str) -> tuple[Sidecar, Path]:
    cache = Path(tempfile.mkdtemp(prefix="ilp-bench-cache-", dir="/tmp"))
    account = pwd.getpwnam(SERVICE_ACCOUNT)
    os.chown(cache, account.pw_uid, account.pw_gid)
    os.chmod(cache, 0o755)
    overrides = {
        "runtime": {"default": runtime},
        "images": {
            "cache_dir": str(cache),
            "mirrors": {"docker.io": REGISTRY},
            "cert_dir": str(registry_dir() / "certs"),
        },
    }
    return Sidecar(root, overrides).start(), cache


async def until(client: SidecarClient, uid: str, phases: tuple[str, ...], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    answers: list[dict] = []
    while time.monotonic() < deadline:
        answers = await client.status([pod_ref(uid)])
        if answers and phase_of(answers[0]) in phases:
            return phase_of(answers[0])
        if answers and phase_of(answers[0]) == FAILED:
            raise RuntimeError(f"pod {uid} failed: {answers[0]['containers']}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"pod {uid} not {phases} after {timeout}s: {answers}")


async def create_to_running(client: SidecarClient, request: dict) -> float:
    started = time.perf_counter()
    answer = await client.create(request)
    await until(client, answer["PodUID"], (RUNNING, SUCCEEDED))
    return time.perf_counter() - started


def served_bytes(since: int, repository: str) -> int:
    with open(registry_dir() / "registry.log", "rb") as log:
        log.seek(since)
        return sum(int(m["bytes"]) for m in ACCESS.finditer(log.read()) if m["repo"].decode() == repository)


async def run(args: argparse.Namespace) -> None:
    subprocess.run(["bash", str(SITE_SCRIPT), "start"], check=True, capture_output=True)
    ensure_site_accounts()
    built = time.perf_counter()
    ref = build_big_image(args.size_mib)
    print(f"image {ref}: ready in the registry ({time.perf_counter() - built:.1f}s)")
    repository = "ilp/" + ref.split("/", 1)[1].split(":")[0]
    work = Path(tempfile.mkdtemp(prefix="ilp-bench-images-"))
    sidecar, cache = image_sidecar(work / "one", args.runtime)
    try:
        async with SidecarClient(sidecar.address) as client:
            first = await create_to_running(client, pod_request("first", ref))
            second = await create_to_running(client, pod_request("second", ref))
            print(
                f"{args.runtime}: create -> Running, {args.size_mib} MiB image: first pull {first:.2f}s, "
                f"cache hit {second:.2f}s"
            )
    finally:
        sidecar.stop()
        shutil.rmtree(cache, ignore_errors=True)
    sidecar, cache = image_sidecar(work / "many", args.runtime)
    try:
        since = (registry_dir() / "registry.log").stat().st_size
        async with SidecarClient(sidecar.address) as client:
            started = time.perf_counter()
            answers = await asyncio.gather(*(client.create(pod_request(f"many-{i}", ref)) for i in range(args.pods)))
            await asyncio.gather(*(until(client, a["PodUID"], (RUNNING, SUCCEEDED)) for a in answers))
            elapsed = time.perf_counter() - started
        served = served_bytes(since, repository)
        image_bytes = args.size_mib * 2**20
        print(
            f"{args.pods} pods of one image at once: all Running in {elapsed:.1f}s; registry served "
            f"{served / 2**20:.1f} MiB for them (image {image_bytes / 2**20:.0f} MiB: {served / image_bytes:.2f}x)"
        )
    finally:
        sidecar.wait_jobs_gone()
        sidecar.stop()
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--runtime", choices=["charliecloud", "podman"], default="charliecloud")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
