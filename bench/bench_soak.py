"""A soak of the sidecar on the embedded local site. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_soak.py [--pods 10000] [--unknown 500] [--restarts 4] [--concurrency 16]

A real devidp and one sidecar (multi-account mode: service account, per-account agents) taking
bearer tokens on TCP, on the local Slurm. Three identities (the devidp's clients alice and bob,
each mapped to its own account, and gateway, mapped to alice's) each create and then delete
their share of `--pods` pods, as the Virtual Kubelet would (create, a status read, delete; a call that fails because the
sidecar is down is retried, as the VK does); `--unknown` deletes of random UIDs are mixed in.
Meanwhile the sidecar is killed (SIGKILL) and started again `--restarts` times at random
moments, and the IdP is stopped for `--outage` seconds in the middle (the sidecar keeps the
keys it has). At the end:
- lost: creates the sidecar acknowledged but did not know at the status read that follows;
- duplicated: pods with more than one job at the scheduler (sacct, by job name);
- refused: calls answered 401/403/5xx other than while the sidecar was down;
- the sidecar's RSS after warm-up, at each kill and at the end, with the pods it tracked.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_gateway import ensure_site_and_accounts, rss_mib  # noqa: E402
from interlink_provider.auth.exchange import OAuthClient  # noqa: E402
from interlink_provider.cli.client import SidecarClient, SidecarError, pod_ref  # noqa: E402
from interlink_provider.pods import manifest  # noqa: E402
from tests.helpers import Sidecar, site_dir, slurm  # noqa: E402
from tests.idp import SITE_AUDIENCE, IdP, free_port, token_auth  # noqa: E402

SCOPES = "compute.create compute.read compute.cancel"
IDENTITIES = {"alice": "ilp-alice", "bob": "ilp-bob", "gateway": "ilp-alice"}  # devidp client -> account


def request(index: int) -> dict:
    pod = {
        "metadata": {"name": f"soak-{index}"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
        },
    }
    return manifest.create_request(pod, manifest.Manifests(), namespace="soak")


class Tally:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.refusals: collections.Counter[str] = collections.Counter()


async def tokens(idp: IdP) -> dict[str, str]:
    found = {}
    for name in IDENTITIES:
        client = OAuthClient(idp.issuer, name, f"{name}-secret", ca_file=idp.ca_file)
        try:
            found[name] = (await client.client_credentials(SCOPES, SITE_AUDIENCE)).access_token
        finally:
            await client.close()
    return found


async def retried(sidecar: Sidecar, token: str, tally: Tally, call):
    """One call, retried while the sidecar is down or starting, as the VK retries; a refusal is
    counted (except 404, which the caller reads) and raised."""
    for _ in range(600):
        try:
            async with SidecarClient(sidecar.http, token=token) as client:
                return await call(client)
        except SidecarError as exc:
            if exc.status not in (502, 503, 504):
                if exc.status != 404:
                    tally.refusals[f"{exc.status} {exc.message[:80]}"] += 1
                raise
        except (OSError, aiohttp.ClientError):
            pass
        tally.counts["retried while down"] += 1
        await asyncio.sleep(0.5)
    raise TimeoutError("the sidecar did not come back")


async def churn(sidecar: Sidecar, token: str, indexes: list[int], tally: Tally, semaphore: asyncio.Semaphore) -> None:
    async def one(index: int) -> None:
        async with semaphore:
            req = request(index)
            uid = req["pod"]["metadata"]["uid"]
            await retried(sidecar, token, tally, lambda c: c.create(req))
            tally.counts["created"] += 1
            await asyncio.sleep(random.uniform(0, 2))  # the VK's next status loop
            known = await retried(sidecar, token, tally, lambda c: c.status([pod_ref(uid)]))
            if not known:
                tally.counts["lost"] += 1  # acknowledged, then unknown to the sidecar
            await retried(sidecar, token, tally, lambda c: c.delete(req["pod"]))
            tally.counts["deleted"] += 1

    await asyncio.gather(*(one(i) for i in indexes))


async def unknown_deletes(sidecar: Sidecar, token: str, count: int, tally: Tally) -> None:
    for _ in range(count):
        ghost = {"metadata": {"uid": str(uuid.uuid4()), "name": "ghost", "namespace": "soak"}}
        try:
            await retried(sidecar, token, tally, lambda c, ghost=ghost: c.delete(ghost))
            tally.counts["unknown delete 2xx"] += 1
        except SidecarError as exc:
            tally.counts[f"unknown delete {exc.status}"] += 1
        await asyncio.sleep(random.uniform(0, 0.1))


def memory(sidecar: Sidecar) -> float:
    """The sidecar's RSS (MiB): the helper starts it through setpriv, which execs it."""
    assert sidecar.process is not None
    return rss_mib(sidecar.process.pid)[0]


async def disruptions(sidecar: Sidecar, idp: IdP, args, done: asyncio.Event, rss: list[str]) -> None:
    moments = sorted(random.uniform(0.1, 0.9) * args.expected_seconds for _ in range(args.restarts))
    outage_at = args.expected_seconds / 2
    started = time.monotonic()
    pending = [(t, "restart") for t in moments] + [(outage_at, "outage")]
    for at, what in sorted(pending):
        delay = at - (time.monotonic() - started)
        if delay > 0:
            try:
                await asyncio.wait_for(done.wait(), delay)
                return
            except TimeoutError:
                pass
        if what == "restart":
            rss.append(f"{memory(sidecar):.0f} MiB at kill {len(rss)} ({time.monotonic() - started:.0f} s)")
            sidecar.kill()
            await asyncio.sleep(1)
            await asyncio.to_thread(sidecar.start)
        else:
            idp.stop()
            await asyncio.sleep(args.outage)
            await asyncio.to_thread(idp.start)


def jobs_per_pod(prefix: str) -> collections.Counter[str]:
    """Job ids per job name of ours: the queue's (every state) and the job completion log's
    (the local Slurm keeps no accounting database; each ended job is one line there)."""
    ids: dict[str, set[str]] = collections.defaultdict(set)
    for line in slurm("squeue", "-h", "--states=all", "-o", "%i %j").splitlines():
        job_id, _, name = line.strip().partition(" ")
        if name.startswith(prefix):
            ids[name].add(job_id)
    for line in (site_dir() / "slurm" / "log" / "jobcomp.txt").read_text().splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields.get("Name", "").startswith(prefix):
            ids[fields["Name"]].add(fields["JobId"])
    return collections.Counter({name: len(found) for name, found in ids.items()})


async def run(args) -> None:
    ensure_site_and_accounts()
    work = Path(f"/var/tmp/ilp-bench-soak-{uuid.uuid4().hex[:8]}")
    idp = IdP(work / "idp", tls=True).start()
    port = free_port()
    rules = [{"sub": name, "account": account} for name, account in IDENTITIES.items()]
    sidecar = Sidecar(
        work / "site",
        {
            "listen": {"host": "127.0.0.1", "port": port},
            "auth": token_auth(idp, rules),
            "max_pods": args.pods + 1000,
            "status": {"poll_interval": 5},
            "retention_seconds": args.retention,
        },
    ).start()
    sidecar.http = f"http://127.0.0.1:{port}"
    tally, rss = Tally(), []
    try:
        granted = await tokens(idp)
        semaphore = asyncio.Semaphore(args.concurrency)
        creators = list(IDENTITIES)
        await churn(sidecar, granted["alice"], list(range(100)), tally, semaphore)  # warm-up
        rss.append(f"{memory(sidecar):.0f} MiB after warm-up")
        shares = {name: list(range(100 + i, args.pods + 100, len(creators))) for i, name in enumerate(creators)}
        done = asyncio.Event()
        disrupt = asyncio.create_task(disruptions(sidecar, idp, args, done, rss))
        started = time.monotonic()
        await asyncio.gather(
            *(churn(sidecar, granted[name], share, tally, semaphore) for name, share in shares.items()),
            unknown_deletes(sidecar, granted["bob"], args.unknown, tally),
        )
        seconds = time.monotonic() - started
        done.set()
        await disrupt
        rss.append(f"{memory(sidecar):.0f} MiB at the end")
        jobs = jobs_per_pod(sidecar.prefix)
    finally:
        sidecar.stop()
        idp.stop()

    duplicated = sum(1 for count in jobs.values() if count > 1)
    print(
        f"{args.pods} pods created and deleted by {len(creators)} identities in {seconds:.0f} s "
        f"({args.pods / seconds:.1f} pods/s, {args.concurrency} in flight), {args.unknown} deletes of unknown UIDs, "
        f"{args.restarts} sidecar kills, an IdP outage of {args.outage:.0f} s, deleted pods kept {args.retention:.0f} s"
    )
    print(f"lost: {tally.counts['lost']}; duplicated jobs: {duplicated} (of {len(jobs)} pods with a job)")
    print("counts: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.counts.items())))
    print("refusals: " + (", ".join(f"{k} x{v}" for k, v in tally.refusals.items()) or "none"))
    print(f"sidecar RSS: {'; '.join(rss)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--unknown", type=int, default=500)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the IdP is down, in the middle")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--retention", type=float, default=3600, help="retention_seconds: how long deleted pods are kept (their RSS)"
    )
    parser.add_argument(
        "--expected-seconds", type=float, default=None, help="the run's expected length (placing the disruptions)"
    )
    args = parser.parse_args()
    if args.expected_seconds is None:
        args.expected_seconds = args.pods / 20  # about 20 pods/s through create, status and delete
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
