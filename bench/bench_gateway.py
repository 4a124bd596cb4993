"""Gateway benchmark on the embedded local site. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_gateway.py [--pods 200] [--concurrency 8] [--tracked 10000] [--poll 5]

A real devidp (HTTPS), one sidecar serving gRPC over TLS on the local Slurm, and the
gateway in front of it, as the Virtual Kubelet would use them:
1. Tracked pods: the sidecar's store is seeded with `--tracked` finished pods of the
   gateway's identity; the gateway learns them all from its WatchStatus snapshot.
   Time to the full snapshot, and the gateway's RSS holding them.
2. Create burst through the gateway (VK->API /create -> gRPC CreatePod -> sbatch):
   pods/s and create latency p50/p95.
3. Status freshness for those pods: from the moment the runner wrote the container's
   end (its finished_at file) to the moment the gateway's /status shows Succeeded
   (pushed by WatchStatus; the gateway is read every 25 ms), against interLink-style
   polling of the site every `--poll` seconds (its VK status loop runs every 5 s) in
   the same run.
Everything it created is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import quantiles  # noqa: E402
from interlink_provider.cli.client import SidecarClient, pod_ref  # noqa: E402
from interlink_provider.rpc.client import bearer, offloader, open_channel  # noqa: E402
from interlink_provider.rpc.offloader.v1 import offloader_pb2 as pb  # noqa: E402
from sidecars.core.domain.records import ContainerInfo, PodRecord, PodStatuses, PodSummary, Stage  # noqa: E402
from sidecars.core.domain.store import Store  # noqa: E402
from tests.federation import GatewayProcess, grpc_sidecar, vk_request, wait_until_up  # noqa: E402
from tests.helpers import SITE_SCRIPT, site_dir  # noqa: E402
from tests.idp import SITE_AUDIENCE, IdP  # noqa: E402

ACCOUNTS = ("ilp-alice", "ilp-bob")  # the sidecar maps the gateway to ilp-alice


def ensure_site_and_accounts() -> None:
    subprocess.run(
        ["bash", str(SITE_SCRIPT), "start"],
        check=True,
        capture_output=True,
        timeout=600,
        env={"ILP_SITE_DIR": str(site_dir()), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    for name in ACCOUNTS:
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)


async def seed(state_dir: Path, owner: str, count: int) -> None:
    """Finished pods of the gateway's identity, as a long-running sidecar would hold them."""
    store = Store(state_dir / "sidecar.db")
    await store.open()
    container = {
        "name": "c",
        "image": "busybox",
        "state": {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": "2026-11-23T10:00:00Z",
                "finishedAt": "2026-11-23T10:00:01Z",
            }
        },
        "ready": False,
        "started": False,
        "restartCount": 0,
    }
    for index in range(count):
        uid = f"00000000-0000-4000-8000-{index:012d}"
        await store.insert(
            PodRecord(
                uid=uid,
                namespace="tracked",
                name=f"tracked-{index}",
                pod_dir=f"/nonexistent/{uid}",
                job_name=f"seeded-{uid}",
                stage=Stage.FINISHED,
                owner=owner,
                job_id=str(900000 + index),
                phase="Succeeded",
                summary=PodSummary(containers=(ContainerInfo("c", "busybox", False, "Never"),), grace=30),
                status=PodStatuses(apps=(container,)),
                finished_at=time.time(),
            )
        )
    await store.close()


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def hello(index: int) -> dict:
    return {
        "metadata": {"name": f"gwbench-{index}"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
        },
    }


def finished_at(sidecar, uid: str) -> float | None:
    path = sidecar.pods_root / f"gwbench-{uid}" / "containers" / "c" / "finished_at"
    if not path.exists():
        return None
    text = path.read_text().strip()  # 2026-11-23T22:52:43.527652000Z
    whole, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")


async def run(args) -> None:
    ensure_site_and_accounts()
    work = Path(tempfile.mkdtemp(prefix="ilp-bench-gateway-"))
    idp = IdP(work / "idp", tls=True).start()
    sidecar = None
    gateway = None
    try:
        owner = f"gateway@{idp.issuer}"
        # grpc_sidecar starts the sidecar; seed its store first by preparing the state dir it will use.
        (work / "site" / "sidecar" / "state").mkdir(parents=True)
        await seed(work / "site" / "sidecar" / "state", owner, args.tracked)
        sidecar = grpc_sidecar(work / "site", idp)
        started = time.monotonic()
        gateway = GatewayProcess(work / "gateway", idp, {"local": sidecar}).start()
        await wait_until_up(gateway, 1)
        probe = {"metadata": {"uid": f"00000000-0000-4000-8000-{args.tracked - 1:012d}"}}
        async with SidecarClient(gateway.address) as client:
            while not await client.status([probe]):
                await asyncio.sleep(0.05)
        snapshot_seconds = time.monotonic() - started
        rss_tracked, _ = rss_mib(gateway.process.pid)

        # Create burst through the gateway.
        latencies: list[float] = []
        uids: list[str] = []
        semaphore = asyncio.Semaphore(args.concurrency)
        async with SidecarClient(gateway.address) as client:

            async def create(index: int) -> None:
                async with semaphore:
                    begin = time.monotonic()
                    answer = await client.call("POST", "/create", vk_request(hello(index), namespace="gwbench"))
                    latencies.append(time.monotonic() - begin)
                    uids.append(answer["PodUID"])

            burst_started = time.monotonic()
            await asyncio.gather(*(create(i) for i in range(args.pods)))
            burst_seconds = time.monotonic() - burst_started

            # Freshness: the gateway (pushed) read every 25 ms, and interLink-style polling of the site.
            pushed: dict[str, float] = {}
            polled: dict[str, float] = {}
            token = await gateway_token(idp)

            async def watch_gateway() -> None:
                while len(pushed) < len(uids):
                    answers = await client.status([pod_ref(u) for u in uids if u not in pushed])
                    now = time.time()
                    for answer in answers:
                        state = answer["containers"][0]["state"] if answer["containers"] else {}
                        if "terminated" in state:
                            pushed[answer["UID"]] = now
                    await asyncio.sleep(0.025)

            async def poll_site() -> None:
                async with open_channel(sidecar.target, sidecar.ca) as channel:
                    stub = offloader(channel)
                    while len(polled) < len(uids):
                        reply = await stub.GetStatus(
                            pb.GetStatusRequest(uids=[u for u in uids if u not in polled]), metadata=bearer(token)
                        )
                        now = time.time()
                        for pod in reply.pods:
                            if pod.phase == "Succeeded":
                                polled[pod.uid] = now
                        await asyncio.sleep(args.poll)

            await asyncio.wait_for(asyncio.gather(watch_gateway(), poll_site()), timeout=600)
            ends = {uid: finished_at(sidecar, uid) for uid in uids}
            push_delays = [pushed[u] - e for u, e in ends.items() if e is not None]
            poll_delays = [polled[u] - e for u, e in ends.items() if e is not None]
            for uid in uids:
                await client.call("POST", "/delete", {"metadata": {"uid": uid, "name": "x", "namespace": "gwbench"}})
        rss_end, peak = rss_mib(gateway.process.pid)
    finally:
        if gateway is not None:
            gateway.stop()
        if sidecar is not None:
            sidecar.stop()
        idp.stop()

    print(
        f"tracked pods: {args.tracked} learned from the WatchStatus snapshot in {snapshot_seconds:.2f} s "
        f"(gateway start included); gateway RSS holding them: {rss_tracked:.0f} MiB"
    )
    print(
        f"create burst through the gateway: {args.pods} pods in {burst_seconds:.2f} s = "
        f"{args.pods / burst_seconds:.1f} pods/s; create latency {quantiles(latencies)} ({args.concurrency} in flight)"
    )
    print(f"status freshness, container end -> gateway /status (WatchStatus push): {quantiles(push_delays)}")
    print(
        f"status freshness, container end -> site polled every {args.poll:g} s (interLink-style): "
        f"{quantiles(poll_delays)}"
    )
    print(f"gateway RSS at the end: {rss_end:.0f} MiB (peak {peak:.0f} MiB)")


async def gateway_token(idp) -> str:
    from interlink_provider.auth.exchange import OAuthClient

    client = OAuthClient(idp.issuer, "gateway", "gateway-secret", ca_file=idp.ca_file)
    try:
        return (
            await client.client_credentials("compute.create compute.read compute.cancel", SITE_AUDIENCE)
        ).access_token
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tracked", type=int, default=10000)
    parser.add_argument("--poll", type=float, default=5.0, help="interLink-style polling period (seconds)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
