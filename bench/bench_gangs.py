"""Gang benchmark on the embedded local site (Slurm's two nodes, partition all). Prints figures;
asserts nothing.

    .venv/bin/python bench/bench_gangs.py [--gangs 10] [--rounds 5]

1. The anchor: a lone pod, create -> Running (one sbatch, one node).
2. One gang of 2: from the create of its last member (the first is held) to both Running,
   --rounds times: what holding and the two-node job cost over a lone pod.
3. --gangs gangs of 2 whose members are created at once in a shuffled order: until every member
   ran to the end, and how many jobs they got (one per gang: no member ever submitted alone).
The sidecar runs the sandbox runtime; everything it created is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
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
from tests.helpers import SITE_SCRIPT, Sidecar  # noqa: E402


def pod_request(name: str, seconds: int, gang: str = "", index: int = 0) -> dict:
    annotations = {}
    if gang:
        annotations = {
            "interlink.provider/gang": gang,
            "interlink.provider/gang-size": "2",
            "batch.kubernetes.io/job-completion-index": str(index),
        }
    container = {
        "name": "c",
        "image": "busybox",
        "command": ["sleep", str(seconds)],
        "resources": {"limits": {"cpu": "1", "memory": "64Mi"}},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "annotations": annotations},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [container]},
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="bench")


async def until(client: SidecarClient, uids: list[str], phases: tuple[str, ...], timeout: float = 300) -> list[dict]:
    """Every pod in one of `phases`: their statuses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers = await client.status([pod_ref(uid) for uid in uids])
        if any(phase_of(a) == FAILED for a in answers):
            raise RuntimeError(f"a pod failed: {[a['containers'] for a in answers if phase_of(a) == FAILED]}")
        if len(answers) == len(uids) and all(phase_of(a) in phases for a in answers):
            return answers
        await asyncio.sleep(0.05)
    raise TimeoutError(f"pods not {phases} after {timeout}s")


async def lone_pod(client: SidecarClient) -> float:
    started = time.perf_counter()
    answer = await client.create(pod_request("lone", 2))
    await until(client, [answer["PodUID"]], (RUNNING, SUCCEEDED))
    return time.perf_counter() - started


async def one_gang(client: SidecarClient, name: str) -> float:
    first = await client.create(pod_request(f"{name}-0", 2, name, 0))
    await asyncio.sleep(0.5)  # held meanwhile
    started = time.perf_counter()
    last = await client.create(pod_request(f"{name}-1", 2, name, 1))
    await until(client, [first["PodUID"], last["PodUID"]], (RUNNING, SUCCEEDED))
    return time.perf_counter() - started


async def many_gangs(client: SidecarClient, gangs: int) -> tuple[float, int]:
    requests = [pod_request(f"many{g}-{i}", 2, f"many{g}", i) for g in range(gangs) for i in range(2)]
    random.shuffle(requests)
    started = time.perf_counter()
    answers = await asyncio.gather(*(client.create(r) for r in requests))
    finals = await until(client, [a["PodUID"] for a in answers], (SUCCEEDED,), timeout=600)
    return time.perf_counter() - started, len({final["JID"] for final in finals})


async def run(args: argparse.Namespace) -> None:
    subprocess.run(["bash", str(SITE_SCRIPT), "start"], check=True, capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="ilp-bench-gangs-"))
    sidecar = Sidecar(work / "sidecar", {"slurm": {"partition": "all"}}).start()
    try:
        async with SidecarClient(sidecar.address) as client:
            lone = [await lone_pod(client) for _ in range(args.rounds)]
            gang = [await one_gang(client, f"one{r}") for r in range(args.rounds)]
            print(
                f"create -> Running, p50 of {args.rounds}: lone pod {statistics.median(lone):.2f}s; "
                f"gang of 2 over two nodes (from its last member's create) {statistics.median(gang):.2f}s"
            )
            elapsed, jobs = await many_gangs(client, args.gangs)
            print(
                f"{args.gangs} gangs of 2 (members created at once, shuffled): all Succeeded in {elapsed:.1f}s; "
                f"{jobs} jobs for {2 * args.gangs} pods"
            )
    finally:
        sidecar.wait_jobs_gone()
        sidecar.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gangs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
