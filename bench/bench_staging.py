"""Stage-in benchmark on the embedded local site's XRootD and Rucio. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_staging.py [--total 1G] [--rounds 2] [--parallel 4]

1. A dataset of mixed file sizes (default 1 GiB: 5 x 128 MiB, 16 x 16 MiB, 96 x 1 MiB,
   512 x 64 KiB) is written into the local xrootd's storage and registered in Rucio.
2. Cold stage-in with the sidecar's Stager (Rucio resolution, parallel CopyProcess,
   adler32 verified against the catalog, admission to the content cache, hard links
   into the pod's directory), against plain `xrdcp --parallel N` of the same files
   into a directory, alternating, `--rounds` times each: seconds, MB/s, ratio.
   `xrdcp` is also timed with `--cksum adler32` (what verification costs it).
3. Cache hit: a second pod needing the same dataset (links only, no transfer).
4. Four pods staging the same dataset at once on a cold cache: files transferred.
The files are removed from the storage at the end, the rule deleted and the dataset
set to expire.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from interlink_provider.pods.staging import StageInput, StagingSpec  # noqa: E402
from interlink_provider.staging.catalog import RucioCatalog  # noqa: E402
from interlink_provider.staging.config import RucioConfig, StagingConfig  # noqa: E402
from interlink_provider.staging.engine import PodStaging, Stager  # noqa: E402
from interlink_provider.staging.refs import FileRef, adler32_of  # noqa: E402
from interlink_provider.staging.volumes import VolumeDirs  # noqa: E402
from tests.helpers import SITE_SCRIPT, site_dir  # noqa: E402

RSE = "LOCAL_XRD"
RUCIO_HOST = "http://127.0.0.1:18081"
MIB = 1024 * 1024
MIX = ((128 * MIB, 5), (16 * MIB, 16), (1 * MIB, 96), (64 * 1024, 512))  # 1 GiB in 629 files


def ensure_site() -> None:
    env = {**os.environ, "ILP_SITE_DIR": str(site_dir())}
    subprocess.run(["bash", str(SITE_SCRIPT), "start"], env=env, check=True, capture_output=True, timeout=600)


def file_mix(total: int) -> list[int]:
    scale = total / sum(size * count for size, count in MIX)
    return [size for size, count in MIX for _ in range(max(1, round(count * scale)))]


def make_dataset(catalog: RucioCatalog, sizes: list[int]) -> tuple[str, list[FileRef], list[Path]]:
    """Files written straight into the xrootd data directory (setup, not measured), then registered."""
    dataset = f"bench-{uuid.uuid4().hex[:8]}"
    block = os.urandom(4 * MIB)
    owner = (site_dir() / "xrd" / "data" / "rucio").stat()  # the xrootd server's user must keep writing here
    refs, disks = [], []
    for index, size in enumerate(sizes):
        name = f"{dataset}/f{index:04d}-{size // 1024}k.dat"
        pfn = catalog.pfn(RSE, "user", name)
        disk = site_dir() / "xrd" / "data" / pfn.split("//", 2)[2].lstrip("/")
        _make_dirs_as(disk.parent, owner)
        with open(disk, "wb") as handle:
            handle.write(index.to_bytes(8, "little"))  # every file distinct
            left = size - 8
            while left > 0:
                handle.write(block[:left])
                left -= min(left, len(block))
        os.chown(disk, owner.st_uid, owner.st_gid)
        refs.append(FileRef("user", name, size, adler32_of(disk)))
        disks.append(disk)
    catalog.register(RSE, refs, ("user", dataset), 3600)
    return f"user:{dataset}", refs, disks


def forget(catalog: RucioCatalog, did: str) -> None:
    """Tidy the catalog: the rule goes (replicas get a tombstone) and the dataset expires.

    The local site runs no Rucio reaper, so the file replicas stay listed until one runs.
    """
    client = catalog.client()
    scope, name = did.split(":", 1)
    for rule in client.list_did_rules(scope, name):
        client.delete_replication_rule(rule["id"], purge_replicas=True)
    client.set_metadata(scope, name, "lifetime", 1)


def _make_dirs_as(directory: Path, owner: os.stat_result) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        new.mkdir()
        os.chown(new, owner.st_uid, owner.st_gid)


def stager(cache: Path, state: Path, password: Path, parallel: int) -> Stager:
    config = StagingConfig(
        rucio=RucioConfig(host=RUCIO_HOST, username="ddmlab", password_file=str(password)),
        cache_dir=str(cache),
        cache_max_bytes=8 * 1024**3,
        parallel=parallel,
    )
    return Stager(config, state)


def pod(did: str, target: Path, uid: str) -> PodStaging:
    target.mkdir(parents=True, exist_ok=True)
    spec = StagingSpec(inputs=(StageInput(did=did, mount="/data"),))
    return PodStaging(spec, VolumeDirs([target]), "bench", uid, uid)


async def stage_in(stage: Stager, did: str, target: Path) -> float:
    started = time.monotonic()
    await stage.stage_in(pod(did, target, uuid.uuid4().hex))
    return time.monotonic() - started


def xrdcp(pfns: list[str], target: Path, parallel: int, checksum: bool) -> float:
    target.mkdir(parents=True, exist_ok=True)
    command = ["xrdcp", "--silent", "--force", "--parallel", str(parallel)]
    if checksum:
        command += ["--cksum", "adler32"]
    started = time.monotonic()
    done = subprocess.run([*command, *pfns, str(target) + "/"], capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"xrdcp failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return elapsed


def rate(total: int, seconds: float) -> str:
    return f"{seconds:7.2f} s  {total / seconds / 1e6:7.1f} MB/s"


async def run(args) -> None:
    ensure_site()
    work = Path(tempfile.mkdtemp(prefix="ilp-bench-staging-", dir=str(site_dir())))
    password = work / "password"
    password.write_text((site_dir() / "rucio" / "password").read_text())
    password.chmod(0o600)
    catalog = RucioCatalog(RucioConfig(host=RUCIO_HOST, username="ddmlab", password_file=str(password)), work, "LOCAL")
    sizes = file_mix(args.total)
    total = sum(sizes)
    print(
        f"dataset: {len(sizes)} files, {total / MIB:.0f} MiB "
        f"({', '.join(f'{n} x {s // 1024} KiB' for s, n in sorted(_counts(sizes).items(), reverse=True))})"
    )
    did, _refs, disks = make_dataset(catalog, sizes)
    pfns = [r.sources[0] for r in catalog.resolve(*did.split(":", 1))]
    ours, plain, plain_ck = [], [], []
    try:
        for round_ in range(args.rounds):
            cache = work / f"cache-{round_}"
            ours.append(await stage_in(stager(cache, work, password, args.parallel), did, work / f"pod-{round_}"))
            plain.append(xrdcp(pfns, work / f"xrdcp-{round_}", args.parallel, checksum=False))
            plain_ck.append(xrdcp(pfns, work / f"xrdcp-ck-{round_}", args.parallel, checksum=True))
            for leftover in (cache, work / f"pod-{round_}", work / f"xrdcp-{round_}", work / f"xrdcp-ck-{round_}"):
                if round_ < args.rounds - 1 or leftover.name.startswith("xrdcp"):
                    shutil.rmtree(leftover, ignore_errors=True)
        warm = stager(work / f"cache-{args.rounds - 1}", work, password, args.parallel)
        hits = [await stage_in(warm, did, work / f"hit-{i}") for i in range(3)]
        shared = stager(work / "cache-shared", work, password, args.parallel)
        started = time.monotonic()
        await asyncio.gather(*(stage_in(shared, did, work / f"shared-{i}") for i in range(4)))
        shared_seconds = time.monotonic() - started
    finally:
        forget(catalog, did)
        shutil.rmtree(work, ignore_errors=True)
        for disk in disks:
            disk.unlink(missing_ok=True)

    best_ours, best_plain, best_ck = min(ours), min(plain), min(plain_ck)
    print(f"stage-in (Stager, verified, cached)   best {rate(total, best_ours)}   runs {_runs(ours)}")
    print(f"xrdcp --parallel {args.parallel}                   best {rate(total, best_plain)}   runs {_runs(plain)}")
    print(f"xrdcp --parallel {args.parallel} --cksum adler32   best {rate(total, best_ck)}   runs {_runs(plain_ck)}")
    print(
        f"ratio stage-in / xrdcp: {best_ours / best_plain:.2f} (time; 1.00 = as fast), "
        f"against xrdcp with checksums: {best_ours / best_ck:.2f}"
    )
    print(f"cache hit (second pod, {len(sizes)} links): median {statistics.median(hits) * 1000:.0f} ms")
    print(
        f"4 pods at once on a cold cache: {shared_seconds:.2f} s, files transferred {shared.downloads} "
        f"of {4 * len(sizes)} needed, cache/in-flight hits {shared.cache_hits}"
    )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def _counts(sizes: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return counts


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total", default="1G", help="dataset size (e.g. 256M, 1G)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    from interlink_provider.cli.stage import parse_size

    args.total = parse_size(args.total)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
