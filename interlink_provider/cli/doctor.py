"""`interlink-provider doctor --config FILE`: can this sidecar (doctor_site.py) or gateway
(doctor_gateway.py) work, and if not, why? One line per check, a fix for each failure."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict

from .checks import FAIL, render


def doctor_cmd(args: argparse.Namespace) -> int:
    # Imported here: every daemon starts through this CLI, and the checks' clients (grpc among
    # them) would otherwise sit in each daemon's memory.
    from . import doctor_gateway, doctor_site

    run = doctor_gateway.diagnose_gateway if doctor_gateway.is_gateway_config(args.config) else doctor_site.diagnose
    checks = asyncio.run(run(args.config))
    if args.json:
        print(json.dumps([asdict(check) for check in checks], indent=1))
    else:
        render(checks)
    return 1 if any(check.verdict == FAIL for check in checks) else 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "doctor",
        help="check a sidecar or gateway config end to end: scheduler, runtime, "
        "working area, IdP, tokens, Rucio/XRootD, sites, TLS",
        description="Check a sidecar's or a gateway's configuration against the real "
        "services it uses, with its credentials, and say what to fix. Exits 1 if a check "
        "fails.",
    )
    parser.add_argument(
        "--config", required=True, help="a sidecar's site config, or a gateway's config (recognised by its `sites`)"
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON (for scripts)")
    parser.set_defaults(func=doctor_cmd)
