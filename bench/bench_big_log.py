"""A big log through the gateway, on the embedded local site. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_big_log.py [--mib 100]

A real devidp, one sidecar serving gRPC over TLS on the local Slurm, the gateway in front, as
the Virtual Kubelet uses them. One pod writes `--mib` MiB of 100-byte lines; the log is then read
through the gateway (VK -> /getLogs -> gRPC GetLogs stream -> the site's file):
1. whole: time, MiB/s, bytes and content checked;
2. its last 10 lines (Tail) and its first 1,000 bytes (LimitBytes): time each;
3. peak RSS (VmHWM) of the gateway and the sidecar before and after the reads: reading a log
   must not load it (the sidecar read at most 1 MiB at once, the gateway holds one chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_gateway import ensure_site_and_accounts, rss_mib  # noqa: E402
from interlink_provider.cli.client import SidecarClient, pod_ref  # noqa: E402
from interlink_provider.pods.phase import phase_of  # noqa: E402
from tests.federation import GatewayProcess, grpc_sidecar, vk_request, wait_until_up  # noqa: E402
from tests.idp import IdP  # noqa: E402

LINE = b"x" * 99 + b"\n"


def writer(mib: int) -> dict:
    lines = mib * 1024 * 1024 // len(LINE)
    return {
        "metadata": {"name": "big-log"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["sh", "-c", f"yes {LINE.decode().strip()} | head -n {lines}"],
                }
            ],
        },
    }


async def finished(client: SidecarClient, uid: str, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [answer] = await client.status([pod_ref(uid)]) or [{}]
        if answer and phase_of(answer) in ("Succeeded", "Failed"):
            return phase_of(answer)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"pod {uid} did not finish in {timeout:.0f} s")


async def timed_text(client: SidecarClient, query: dict) -> tuple[float, str]:
    started = time.monotonic()
    text = await client.logs_text(query)
    return time.monotonic() - started, text


async def run(args) -> None:
    ensure_site_and_accounts()
    work = Path(tempfile.mkdtemp(prefix="ilp-bench-big-log-"))
    idp = IdP(work / "idp", tls=True).start()
    sidecar = gateway = None
    expected = args.mib * 1024 * 1024 // len(LINE) * len(LINE)
    try:
        sidecar = grpc_sidecar(work / "site", idp)
        gateway = GatewayProcess(work / "gateway", idp, {"local": sidecar}).start()
        await wait_until_up(gateway, 1)
        async with SidecarClient(gateway.address) as client:
            created = await client.call("POST", "/create", vk_request(writer(args.mib), namespace="bigbench"))
            uid = created["PodUID"]
            written_started = time.monotonic()
            phase = await finished(client, uid)
            written = time.monotonic() - written_started
            before = {name: rss_mib(p.pid) for name, p in (("gateway", gateway.process), ("sidecar", sidecar.process))}
            query = {"PodUID": uid, "Namespace": "bigbench", "ContainerName": "c"}
            digest, size = hashlib.md5(), 0
            started = time.monotonic()
            async for chunk in client.logs({**query, "Opts": {}}):
                digest.update(chunk)
                size += len(chunk)
            whole = time.monotonic() - started
            tail_seconds, tail = await timed_text(client, {**query, "Opts": {"Tail": 10}})
            head_seconds, head = await timed_text(client, {**query, "Opts": {"Bytes": 1000}})
            after = {name: rss_mib(p.pid) for name, p in (("gateway", gateway.process), ("sidecar", sidecar.process))}
            await client.call("POST", "/delete", {"metadata": {"uid": uid, "name": "big-log", "namespace": "bigbench"}})
    finally:
        if gateway is not None:
            gateway.stop()
        if sidecar is not None:
            sidecar.stop()
        idp.stop()

    right = digest.hexdigest() == hashlib.md5(LINE * (expected // len(LINE))).hexdigest()
    print(f"pod writing {args.mib} MiB of log: {phase} after {written:.1f} s (submit, run, status)")
    print(
        f"whole log through the gateway: {size / 2**20:.1f} MiB in {whole:.2f} s = {size / 2**20 / whole:.0f} MiB/s; "
        f"content {'identical' if right and size == expected else 'DIFFERENT'}"
    )
    tail_right = "right" if tail == (LINE * 10).decode() else "WRONG"
    print(f"Tail 10 lines: {tail_seconds * 1000:.0f} ms ({len(tail)} bytes, {tail_right})")
    print(f"LimitBytes 1000: {head_seconds * 1000:.0f} ms ({len(head)} bytes)")
    for name in ("gateway", "sidecar"):
        (rss0, peak0), (rss1, peak1) = before[name], after[name]
        print(f"{name}: RSS {rss0:.0f} -> {rss1:.0f} MiB, peak RSS {peak0:.0f} -> {peak1:.0f} MiB over the reads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=100, help="size of the log (MiB)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
