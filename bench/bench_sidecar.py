"""Sidecar benchmark on the embedded local Slurm site. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_sidecar.py [--pods 500] [--concurrency 8] [--levels 10,100,1000]

1. Create burst: N pods through the REST API (as the interLink API would send them),
   each a held Slurm job (`--hold`), so that they stay tracked: pods/s, create
   latency p50/p95.
2. Status cycle cost as the number of tracked jobs grows (10, 100, 1000 by default):
   scheduler commands per status cycle and status-cycle wall time, read from the
   sidecar's /metrics over several cycles at each level.
3. The sidecar's peak RSS (VmHWM) over the whole run.
Everything it created is deleted at the end (each delete cancels a held job).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench.common import percentile  # noqa: E402
from interlink_provider.cli.client import SidecarClient  # noqa: E402
from interlink_provider.pods import manifest  # noqa: E402
from tests.helpers import SITE_SCRIPT, Sidecar, site_dir  # noqa: E402


def pod_request(index: int) -> dict:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"bench-{index}",
            "namespace": "bench",
            "annotations": {"slurm-job.vk.io/flags": "--hold"},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="bench")


async def metrics(sidecar: Sidecar) -> dict[str, float]:
    connector = aiohttp.UnixConnector(path=sidecar.socket)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get("http://sidecar/metrics") as response:
            text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^(\S+?)(\{[^}]*\})? (\S+)$", line)
        if match:
            key = match.group(1) + (match.group(2) or "")
            values[key] = float(match.group(3))
    return values


def commands_total(values: dict[str, float]) -> float:
    return sum(v for k, v in values.items() if k.startswith("ilp_scheduler_commands_total"))


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def create_all(client: SidecarClient, requests: list[dict], concurrency: int) -> list[float]:
    latencies: list[float] = []
    queue = list(requests)

    async def worker() -> None:
        while queue:
            req = queue.pop()
            started = time.perf_counter()
            await client.create(req)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure_cycles(sidecar: Sidecar, cycles: int) -> tuple[float, float, int]:
    """(scheduler commands per cycle, mean cycle seconds, cycles observed)."""
    before = await metrics(sidecar)
    start_count = before.get("ilp_status_cycle_seconds_count", 0)
    while (await metrics(sidecar)).get("ilp_status_cycle_seconds_count", 0) < start_count + cycles:
        await asyncio.sleep(0.2)
    after = await metrics(sidecar)
    count = after["ilp_status_cycle_seconds_count"] - start_count
    seconds = after["ilp_status_cycle_seconds_sum"] - before.get("ilp_status_cycle_seconds_sum", 0)
    return (commands_total(after) - commands_total(before)) / count, seconds / count, int(count)


async def run(args: argparse.Namespace) -> None:
    env = {**os.environ, "ILP_SITE_DIR": str(site_dir())}
    subprocess.run(["bash", str(SITE_SCRIPT), "start"], env=env, check=True, capture_output=True)
    workdir = Path(args.workdir)
    sidecar = Sidecar(
        workdir,
        {
            "slurm": {"flags": {"allow": ["--hold", "--time"]}},
            "status": {"poll_interval": args.poll_interval},
            "max_concurrent_submits": args.concurrency,
        },
    ).start()
    created: list[dict] = []
    try:
        async with SidecarClient(sidecar.address) as client:
            rows = []

            async def measure_level(level: int) -> None:
                if level > len(created):
                    extra = [pod_request(i) for i in range(len(created), level)]
                    await create_all(client, extra, args.concurrency)
                    created.extend(extra)
                await measure_cycles(sidecar, 1)  # let a whole cycle see them first
                per_cycle, seconds, cycles = await measure_cycles(sidecar, args.cycles)
                rows.append((len(created), per_cycle, seconds, cycles))

            small = [level for level in args.levels if level <= 100]
            large = [level for level in args.levels if level > 100]
            for level in small:
                await measure_level(level)
            burst = [pod_request(i) for i in range(len(created), len(created) + args.pods)]
            started = time.perf_counter()
            latencies = await create_all(client, burst, args.concurrency)
            elapsed = time.perf_counter() - started
            created.extend(burst)
            for level in large:
                await measure_level(level)

            print(
                f"create burst: {args.pods} pods in {elapsed:.1f}s = {args.pods / elapsed:.1f} pods/s; "
                f"latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
                f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms (concurrency {args.concurrency})"
            )
            print(f"{'tracked jobs':>13} {'commands/cycle':>15} {'cycle wall ms':>14} {'cycles':>7}")
            for tracked, per_cycle, seconds, cycles in rows:
                print(f"{tracked:>13} {per_cycle:>15.2f} {seconds * 1000:>14.1f} {cycles:>7}")
            print(f"sidecar peak RSS: {peak_rss_mib(sidecar.process.pid):.0f} MiB")

            delete_started = time.perf_counter()
            queue = [r["pod"] for r in created]

            async def deleter() -> None:
                while queue:
                    await client.delete(queue.pop())

            await asyncio.gather(*(deleter() for _ in range(args.concurrency)))
            print(f"deleted {len(created)} pods in {time.perf_counter() - delete_started:.1f}s")
    finally:
        sidecar.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=500, help="pods in the create burst")
    parser.add_argument("--concurrency", type=int, default=8, help="creates in flight")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000])
    parser.add_argument("--cycles", type=int, default=5, help="status cycles measured per level")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--workdir", default=str(REPO / ".site" / "bench"))
    args = parser.parse_args()
    # Levels up to 100 are measured before the burst, larger ones after it.
    args.levels = sorted(args.levels)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
