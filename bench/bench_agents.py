"""What the agent hop costs, on the embedded local Slurm site. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_agents.py [--pods 200] [--running 3] [--logs 200]

The same account's pods through two sidecars, one after the other:
- without agents: the sidecar runs as the pods' account itself (single-account mode);
- with agents: the sidecar runs as the service account `ilp` and acts through the account's
  agent (started with sudo, the multi-account mode).
For each: create latency p50/p95 (held jobs: the create renders, writes the pod directory and
submits), a status cycle's wall time and scheduler commands with `--running` running pods
whose files are read every cycle, and getLogs p50/p95. Then the agent itself: its start-up
time through sudo (to the answer of its hello) and its resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_sidecar import create_all, measure_cycles  # noqa: E402
from bench.common import percentile, quantiles  # noqa: E402
from interlink_provider.cli.client import SidecarClient, pod_ref  # noqa: E402
from interlink_provider.pods import manifest  # noqa: E402
from sidecars.core.kits import agentwire as wire  # noqa: E402
from tests.helpers import SITE_SCRIPT, Sidecar, site_dir  # noqa: E402

ACCOUNT = "ilp-alice"
AGENT = str(Path(sys.executable).parent.resolve() / "interlink-provider")


def pod(index: int, script: str, hold: bool) -> dict:
    body = {
        "metadata": {
            "name": f"hop-{index}",
            "annotations": {"slurm-job.vk.io/flags": "--hold"} if hold else {},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }
    return manifest.create_request(body, manifest.Manifests(), namespace="hop")


def sidecar(agents: bool) -> Sidecar:
    overrides = {
        "slurm": {"flags": {"allow": ["--hold"]}},
        "status": {"poll_interval": 1},
        "staging": None,
        "auth": {"unix_socket_account": ACCOUNT},
        **({"agents": {"idle_seconds": 300}} if agents else {}),
    }
    return Sidecar(Path("/var/tmp/unused"), overrides, user="ilp" if agents else ACCOUNT)


async def measure(agents: bool, args: argparse.Namespace) -> dict[str, str]:
    site = sidecar(agents).start()
    try:
        async with SidecarClient(site.address) as client:
            held = [pod(i, "true", hold=True) for i in range(args.pods)]
            creates = await create_all(client, held, 8)
            running = [pod(args.pods + i, "echo line; sleep 600", hold=False) for i in range(args.running)]
            for request in running:
                await client.create(request)
            uid = running[0]["pod"]["metadata"]["uid"]
            await wait_running(client, [r["pod"]["metadata"]["uid"] for r in running])
            await measure_cycles(site, 1)
            per_cycle, seconds, cycles = await measure_cycles(site, args.cycles)
            logs = []
            for _ in range(args.logs):
                started = time.perf_counter()
                await client.logs_text({"PodUID": uid, "Namespace": "hop", "ContainerName": "c", "Opts": {}})
                logs.append(time.perf_counter() - started)
            agent_rss = agent_memory(site) if agents else ""
            for request in [*held, *running]:
                await client.delete(request["pod"])
        return {
            "create": quantiles(creates),
            "cycle": f"{seconds * 1000:.1f} ms, {per_cycle:.2f} commands ({cycles} cycles, {args.running} running)",
            "getLogs": quantiles(logs, digits=1),
            "agent RSS": agent_rss,
        }
    finally:
        site.stop()


async def wait_running(client: SidecarClient, uids: list[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answers = await client.status([pod_ref(uid) for uid in uids])
        if all(a["containers"][0]["state"].get("running") for a in answers):
            return
        await asyncio.sleep(0.5)
    raise SystemExit("the running pods did not start (are 4 CPUs free on the local Slurm?)")


def agent_memory(site: Sidecar) -> str:
    """VmRSS of the account's agent(s) under this sidecar."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            cmdline = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if cmdline.rstrip().endswith("site agent") and not cmdline.startswith("sudo"):
            found.append(int(fields["VmRSS"].split()[0]) / 1024)
    return f"{max(found):.0f} MiB ({len(found)} agents)" if found else "no agent found"


async def agent_start_times(count: int, pods_root: str) -> list[float]:
    """Seconds from starting `sudo -n -u ACCOUNT interlink-provider site agent` to its hello's answer."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            "sudo", "-n", "-u", ACCOUNT, "--", AGENT, "site", "agent",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(wire.request_line(wire.Request(1, "hello", {"pods_root": pods_root})))
        await process.stdin.drain()
        answer = wire.parse_answer(await process.stdout.readline())
        times.append(time.perf_counter() - started)
        assert answer.ok and answer.ok["account"] == ACCOUNT, answer
        process.stdin.close()
        await process.wait()
    return times


async def run(args: argparse.Namespace) -> None:
    env = {**os.environ, "ILP_SITE_DIR": str(site_dir())}
    subprocess.run(["bash", str(SITE_SCRIPT), "start"], env=env, check=True, capture_output=True)
    without = await measure(False, args)
    with_agents = await measure(True, args)
    print(f"{'':>10} {'without agents (sidecar = the account)':>44} {'with agents (sidecar = ilp)':>44}")
    for key in ("create", "cycle", "getLogs"):
        print(f"{key:>10} {without[key]:>44} {with_agents[key]:>44}")
    starts = await agent_start_times(args.starts, "/var/tmp")
    print(
        f"agent start-up through sudo (to its hello's answer): p50 {statistics.median(starts) * 1000:.0f} ms, "
        f"p95 {percentile(starts, 0.95) * 1000:.0f} ms (n={len(starts)}); agent RSS {with_agents['agent RSS']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=200, help="held pods created, concurrency 8")
    parser.add_argument("--running", type=int, default=3, help="running pods whose files each cycle reads")
    parser.add_argument("--cycles", type=int, default=5, help="status cycles measured")
    parser.add_argument("--logs", type=int, default=200, help="getLogs calls")
    parser.add_argument("--starts", type=int, default=10, help="agent start-ups timed")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
