"""A site's load from us at scale, on the embedded local Slurm. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_scale.py [--tracked 10000] [--burst 1000] [--steady 60]

1. Tracked pods: `--tracked` held Slurm jobs (real jobs, submitted with sbatch in
   parallel) recorded as a sidecar's SUBMITTED pods, as after a restart. The sidecar
   runs with the site defaults (1.5 scheduler commands/s, burst 10, 5 s status cycle).
   - restart-to-caught-up: process start until a status cycle has covered every pod;
   - steady state over `--steady` seconds: scheduler commands per minute, status-cycle
     wall time and CPU time of the sidecar per cycle, sidecar RSS;
   the same with 10 tracked pods, for comparison (the load must stay flat).
2. Burst: `--burst` creates through the REST plugin API at once (held jobs): create
   answers/s and latency p50/p95 (the submission queue answers without waiting for
   the rate limit), then how long until every pod was submitted (at the site's rate).
Everything is cancelled at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_sidecar import commands_total, create_all, metrics, pod_request  # noqa: E402
from bench.common import quantiles  # noqa: E402
from interlink_provider.cli.client import SidecarClient, pod_ref  # noqa: E402
from sidecars.core.domain.records import ContainerInfo, PodRecord, PodSummary, Stage  # noqa: E402
from sidecars.core.domain.store import Store  # noqa: E402
from tests.helpers import SITE_SCRIPT, Sidecar, site_dir, slurm_env  # noqa: E402

SITE_DEFAULTS = {
    "slurm": {"commands_per_second": 1.5, "command_burst": 10, "flags": {"allow": ["--hold"]}},
    "status": {"poll_interval": 5.0},
}


def submit_held(count: int, prefix: str, workdir: Path) -> list[str]:
    """`count` held jobs named prefix+index, 8 sbatch at a time; their ids in order."""
    script = workdir / "held.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    names = "\n".join(f"{prefix}{i:05d}" for i in range(count))
    out = subprocess.run(
        [
            "xargs",
            "-P",
            "8",
            "-I{}",
            "sbatch",
            "--parsable",
            "--hold",
            "--job-name={}",
            "--output=/dev/null",
            str(script),
        ],
        input=names,
        capture_output=True,
        text=True,
        env=slurm_env(),
        check=True,
    ).stdout
    listed = subprocess.run(
        ["squeue", "-h", "-o", "%j %i", "--states=PENDING"], capture_output=True, text=True, env=slurm_env(), check=True
    ).stdout
    by_name = dict(line.split() for line in listed.splitlines() if line.startswith(prefix))
    assert len(out.split()) == count == len(by_name), (len(out.split()), len(by_name))
    return [by_name[f"{prefix}{i:05d}"] for i in range(count)]


def cancel(job_ids: list[str]) -> None:
    for start in range(0, len(job_ids), 1000):
        subprocess.run(["scancel", *job_ids[start : start + 1000]], env=slurm_env(), capture_output=True)


async def seed(state_dir: Path, job_ids: list[str], prefix: str) -> None:
    store = Store(state_dir / "sidecar.db")
    await store.open()
    summary = PodSummary(containers=(ContainerInfo("c", "busybox", False, "Never"),), grace=30)
    for index, job_id in enumerate(job_ids):
        uid = f"00000000-0000-4000-9000-{index:012d}"
        await store.insert(
            PodRecord(
                uid=uid,
                namespace="scale",
                name=f"scale-{index}",
                pod_dir=f"/nonexistent/{uid}",
                job_name=f"{prefix}{index:05d}",
                stage=Stage.SUBMITTED,
                job_id=job_id,
                summary=summary,
                submitted_at=time.time(),
            )
        )
    await store.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


async def tracked_figures(count: int, steady: float, root: Path) -> None:
    workdir = root / f"tracked-{count}"
    workdir.mkdir(parents=True)
    prefix = f"ilpscale{os.getpid() % 10000}-{count}-"
    started = time.monotonic()
    job_ids = submit_held(count, prefix, workdir)
    print(f"[{count} tracked] {count} held jobs submitted in {time.monotonic() - started:.0f} s (setup)")
    sidecar = Sidecar(workdir / "sidecar", {**SITE_DEFAULTS, "job_name_prefix": prefix})
    await seed(Path(sidecar.config["state_dir"]), job_ids, prefix)
    try:
        started = time.monotonic()
        sidecar.start()
        while True:
            values = await metrics(sidecar)
            if values.get("ilp_tracked_jobs", 0) >= count and values.get("ilp_status_cycle_seconds_count", 0) >= 1:
                break
            await asyncio.sleep(0.1)
        print(f"[{count} tracked] restart to caught up (first full status cycle): {time.monotonic() - started:.2f} s")
        assert sidecar.process is not None
        pid = sidecar.process.pid
        before, cpu_before, clock = await metrics(sidecar), cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(steady)
        after, cpu_after, elapsed = await metrics(sidecar), cpu_seconds(pid), time.monotonic() - clock
        cycles = after["ilp_status_cycle_seconds_count"] - before["ilp_status_cycle_seconds_count"]
        wall = (after["ilp_status_cycle_seconds_sum"] - before["ilp_status_cycle_seconds_sum"]) / max(cycles, 1)
        per_minute = (commands_total(after) - commands_total(before)) / elapsed * 60
        rss, peak = rss_mib(pid)
        print(
            f"[{count} tracked] steady state over {elapsed:.0f} s: {per_minute:.1f} scheduler commands/min "
            f"({per_minute / 60:.2f}/s), {cycles:.0f} status cycles of {wall * 1000:.0f} ms wall and "
            f"{(cpu_after - cpu_before) / max(cycles, 1) * 1000:.0f} ms sidecar CPU each; "
            f"RSS {rss:.0f} MiB (peak {peak:.0f} MiB)"
        )
    finally:
        sidecar.stop()
        cancel(job_ids)


def transport_overrides(kind: str, root: Path) -> dict:
    """The site config's `transport` (and a pods_root "on the login node" for ssh)."""
    if kind == "local":
        return {}
    if kind == "slurmrestd":
        return {
            "transport": {
                "kind": "slurmrestd",
                "slurmrestd": {
                    "url": "http://127.0.0.1:6820",
                    "jwt_key_file": str(site_dir() / "slurm" / "jwt_hs256.key"),
                },
            }
        }
    keys = site_dir() / "ssh"
    return {
        "transport": {
            "kind": "ssh",
            "ssh": {
                "host": "127.0.0.1",
                "port": 2222,
                "user": "root",
                "key_file": str(keys / "client_ed25519"),
                "known_hosts": str(keys / "known_hosts"),
            },
        },
        "pods_root": str(root / "login-node-pods"),
    }


async def burst_figures(count: int, concurrency: int, root: Path, transport: str, rate: float) -> None:
    overrides = {**SITE_DEFAULTS, "create_wait_seconds": 2, **transport_overrides(transport, root)}
    overrides["slurm"] = {**SITE_DEFAULTS["slurm"], "commands_per_second": rate}
    sidecar = Sidecar(root / f"burst-{transport}", overrides).start()
    requests = [pod_request(i) for i in range(count)]
    uids = [r["pod"]["metadata"]["uid"] for r in requests]
    try:
        async with SidecarClient(sidecar.address) as client:
            started = time.monotonic()
            latencies = await create_all(client, requests, concurrency)
            answered = time.monotonic() - started
            print(
                f"[burst, {transport}] {count} creates answered in {answered:.1f} s = {count / answered:.1f} pods/s; "
                f"create latency {quantiles(latencies)} ({concurrency} in flight)"
            )
            while True:
                statuses = await client.status([pod_ref(uid) for uid in uids])
                if sum(1 for s in statuses if s.get("JID")) == count:
                    break
                await asyncio.sleep(1)
            submitted = time.monotonic() - started
            values = await metrics(sidecar)
            print(
                f"[burst, {transport}] all {count} submitted after {submitted:.1f} s = {count / submitted:.2f} "
                f"pods/s at {rate:g} commands/s ({values.get('ilp_scheduler_throttled_seconds_total', 0):.0f} s of "
                "waiting for the bucket in all)"
            )
            for request in requests:
                await client.delete(request["pod"])
    finally:
        sidecar.stop()


async def run(args: argparse.Namespace) -> None:
    env = {**os.environ, "ILP_SITE_DIR": str(site_dir()), "ILP_SLURM_MIN_JOB_AGE": "300"}
    subprocess.run(["bash", str(SITE_SCRIPT), "start"], env=env, check=True, capture_output=True)
    root = Path(tempfile.mkdtemp(prefix="ilp-bench-scale-", dir=str(site_dir())))
    root.chmod(0o711)  # the pods' account (ilp-local) passes through to the ssh "login node"'s pods
    for count in (10, args.tracked) if args.tracked else ():
        await tracked_figures(count, args.steady, root)
    for transport in args.transports.split(",") if args.burst else ():
        await burst_figures(args.burst, args.concurrency, root, transport, args.rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracked", type=int, default=10000)
    parser.add_argument("--steady", type=float, default=60, help="seconds of steady state measured")
    parser.add_argument("--burst", type=int, default=1000, help="creates in the burst (0: skip)")
    parser.add_argument("--concurrency", type=int, default=50, help="creates in flight")
    parser.add_argument("--transports", default="local", help="comma list of local,ssh,slurmrestd for the burst")
    parser.add_argument("--rate", type=float, default=1.5, help="scheduler commands/s in the burst (site default 1.5)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
