"""Trust-network benchmark against a real devidp over HTTPS. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_auth.py [--validations 3000] [--exchanges 300]

- token validations per second with a warm JWKS cache (signature + claims + WLCG checks);
- exchange latency p50/p95 without the cache (every call is an RFC 8693 round trip)
  and with it (hits served from memory).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import percentile  # noqa: E402
from interlink_provider.auth.exchange import ExchangeCache, OAuthClient  # noqa: E402
from interlink_provider.auth.validate import TokenValidator, TrustedIssuer, ValidationConfig  # noqa: E402
from tests.idp import SITE_AUDIENCE, IdP  # noqa: E402


async def run(args: argparse.Namespace) -> None:
    idp = IdP(Path(tempfile.mkdtemp(prefix="ilp-bench-idp-")), tls=True).start()
    try:
        alice = OAuthClient(idp.issuer, "alice", "alice-secret", ca_file=idp.ca_file)
        gateway = OAuthClient(idp.issuer, "gateway", "gateway-secret", ca_file=idp.ca_file)
        token = (await alice.client_credentials("compute.create compute.read", SITE_AUDIENCE)).access_token
        validator = TokenValidator(
            ValidationConfig(
                issuers=[TrustedIssuer(issuer=idp.issuer, ca_file=idp.ca_file, development=True)],
                audiences=[SITE_AUDIENCE],
            )
        )
        await validator.validate(token)  # warm: discovery + JWKS fetched once
        started = time.perf_counter()
        for _ in range(args.validations):
            await validator.validate(token)
        elapsed = time.perf_counter() - started
        print(
            f"validations (warm JWKS cache): {args.validations / elapsed:,.0f}/s "
            f"({elapsed / args.validations * 1e6:.0f} us each; JWKS fetched {validator.keys.fetches}x)"
        )

        subject = (await alice.client_credentials("compute.create compute.read")).access_token
        cold: list[float] = []
        for _ in range(args.exchanges):
            t0 = time.perf_counter()
            await gateway.exchange(subject, SITE_AUDIENCE, "compute.read")
            cold.append(time.perf_counter() - t0)
        cache = ExchangeCache(gateway)
        warm: list[float] = []
        for _ in range(args.validations):
            t0 = time.perf_counter()
            await cache.get(subject, SITE_AUDIENCE, "compute.read", subject="alice")
            warm.append(time.perf_counter() - t0)
        print(
            f"exchange without cache: p50 {statistics.median(cold) * 1000:.1f} ms, "
            f"p95 {percentile(cold, 0.95) * 1000:.1f} ms ({args.exchanges} round trips over HTTPS)"
        )
        print(
            f"exchange with cache:    p50 {statistics.median(warm) * 1e6:.1f} us, "
            f"p95 {percentile(warm, 0.95) * 1e6:.1f} us ({cache.exchanges} exchange, {cache.hits} hits)"
        )
        await validator.close()
        await alice.close()
        await gateway.close()
    finally:
        idp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validations", type=int, default=3000)
    parser.add_argument("--exchanges", type=int, default=300)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
