"""What tokens cost datalake staging, on the embedded local site. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_token_staging.py [--files 64] [--size 1M] [--pods 20]

Against the site IdP (devidp, HTTPS), the token-authorized xrootd (TLS + ztn +
SciTokens), the anonymous xrootd and Rucio:
1. Pod enrolment at create: one RFC 8693 exchange of the owner's token, `--pods` times.
2. Token renewal per staging step: a refresh narrowed to one audience and scope set.
3. Stage-in of the same-size dataset from TOKEN_XRD with the pod's tokens (Rucio
   bearer token, ztn login, TLS) and from LOCAL_XRD anonymously (Rucio userpass).
4. A cache hit with tokens (the storage re-checks the pod's right to every file)
   against one without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_staging import RUCIO_HOST, ensure_site, forget, make_dataset  # noqa: E402
from bench.common import quantiles  # noqa: E402
from interlink_provider.auth.exchange import OAuthClient  # noqa: E402
from interlink_provider.cli.stage import parse_size  # noqa: E402
from interlink_provider.pods.staging import StageInput, StagingSpec  # noqa: E402
from interlink_provider.staging.catalog import RucioCatalog  # noqa: E402
from interlink_provider.staging.config import RucioConfig, StagingConfig, StorageTokensConfig  # noqa: E402
from interlink_provider.staging.engine import PodStaging, Stager  # noqa: E402
from interlink_provider.staging.volumes import VolumeDirs  # noqa: E402
from tests.datalake import put_token_dataset  # noqa: E402
from tests.helpers import site_dir  # noqa: E402

ISSUER = "https://127.0.0.1:8480/"
STORAGE = "127.0.0.1:11096"


def token_stager(work: Path, cache: Path) -> Stager:
    secret = work / "stager-secret"
    secret.write_text("stager-secret")
    secret.chmod(0o600)
    tokens = StorageTokensConfig(
        issuer=ISSUER,
        ca_file=str(site_dir() / "devidp" / "ca.pem"),
        client_id="site-stager",
        client_secret_file=str(secret),
        storage_audience=f"https://{STORAGE}",
        storage_endpoints=[STORAGE],
        x509_cert_dir=str(site_dir() / "pki" / "ca-dir"),
    )
    config = StagingConfig(rucio=RucioConfig(host=RUCIO_HOST), tokens=tokens, cache_dir=str(cache))
    state = work / f"state-{uuid.uuid4().hex[:6]}"
    state.mkdir()
    return Stager(config, state)


def plain_stager(work: Path, cache: Path, password: Path) -> Stager:
    config = StagingConfig(
        rucio=RucioConfig(host=RUCIO_HOST, username="ddmlab", password_file=str(password)), cache_dir=str(cache)
    )
    return Stager(config, work)


def pod(stager: Stager, did: str, target: Path, uid: str) -> PodStaging:
    target.mkdir(parents=True)
    spec = StagingSpec(inputs=(StageInput(did=did, mount="/data"),))
    return PodStaging(spec, VolumeDirs([target]), "bench", uid, uid, credentials=stager.credentials_for(uid))


async def timed(work) -> float:
    started = time.monotonic()
    await work
    return time.monotonic() - started


async def run(args) -> None:
    ensure_site()
    work = Path(tempfile.mkdtemp(prefix="ilp-bench-tokens-", dir=str(site_dir())))
    password = work / "password"
    password.write_text((site_dir() / "rucio" / "password").read_text())
    password.chmod(0o600)
    catalog = RucioCatalog(RucioConfig(host=RUCIO_HOST, username="ddmlab", password_file=str(password)), work, "LOCAL")
    size = parse_size(args.size)
    blob = os.urandom(size)
    token_did = put_token_dataset(
        catalog, {f"f{i:03d}.dat": i.to_bytes(8, "little") + blob[8:] for i in range(args.files)}
    )
    plain_did, _, disks = make_dataset(catalog, [size] * args.files)
    user = OAuthClient(ISSUER, "demo-user", "demo-secret", ca_file=str(site_dir() / "devidp" / "ca.pem"))
    stagers: list[Stager] = []
    try:
        owner_token = (await user.client_credentials("compute.create", "https://site.test")).access_token
        enrolling = token_stager(work, work / "cache-enrol")
        stagers.append(enrolling)
        enrolments = [await timed(enrolling.tokens.enroll(f"pod-{i}", owner_token, ["user"])) for i in range(args.pods)]
        renewals = []
        for i in range(args.pods):
            renewals.append(await timed(enrolling.tokens.token(f"pod-{i}", enrolling.tokens.read())))

        token_runs, plain_runs = [], []
        for round_ in range(args.rounds):
            tokened = token_stager(work, work / f"cache-t{round_}")
            stagers.append(tokened)
            await tokened.tokens.enroll("pod-t", owner_token, [])
            token_runs.append(await timed(tokened.stage_in(pod(tokened, token_did, work / f"t{round_}", "pod-t"))))
            plain = plain_stager(work, work / f"cache-p{round_}", password)
            plain_runs.append(await timed(plain.stage_in(pod(plain, plain_did, work / f"p{round_}", "pod-p"))))
        await tokened.tokens.enroll("pod-h", owner_token, [])
        token_hits = [
            await timed(tokened.stage_in(pod(tokened, token_did, work / f"th{i}", "pod-h"))) for i in range(3)
        ]
        plain_hits = [await timed(plain.stage_in(pod(plain, plain_did, work / f"ph{i}", "pod-p"))) for i in range(3)]
    finally:
        await user.close()
        for stager in stagers:
            await stager.close()
        forget(catalog, plain_did)
        forget(catalog, token_did)
        for disk in disks:
            disk.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)

    total = args.files * size
    print(f"dataset: {args.files} files x {size // 1024} KiB on each RSE")
    print(f"enrolment at create (RFC 8693 exchange):      {quantiles(enrolments, digits=1)}")
    print(f"token renewal per step (narrowed refresh):    {quantiles(renewals, digits=1)}")
    best_t, best_p = min(token_runs), min(plain_runs)
    print(f"stage-in with tokens (TOKEN_XRD, TLS+ztn)     best {best_t:.2f} s  {total / best_t / 1e6:.1f} MB/s")
    print(f"stage-in anonymous (LOCAL_XRD)                best {best_p:.2f} s  {total / best_p / 1e6:.1f} MB/s")
    print(f"ratio tokens / anonymous: {best_t / best_p:.2f}")
    print(
        f"cache hit with tokens (re-check per file): median {statistics.median(token_hits) * 1000:.0f} ms; "
        f"without: median {statistics.median(plain_hits) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--size", default="1M", help="size of each file (e.g. 256K, 4M)")
    parser.add_argument("--pods", type=int, default=20, help="enrolments to time")
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
