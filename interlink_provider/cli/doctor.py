"""`interlink-provider doctor --config site.yaml`: can this sidecar work, and if not, why?
(A gateway's config is checked by doctor_gateway.py.)

Each check talks to the real dependency with the configured credentials, the way the
sidecar would (same backend, transport, validator and clients), and says what to fix.
A site admin runs it after an install, after a change, or when pods are stuck; it exits
non-zero when any check fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import ssl
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
MIN_FREE_BYTES = 1024**3  # below this the working area is a warning
CERT_WARN_DAYS = 14


@dataclass
class Check:
    name: str
    verdict: str
    detail: str
    fix: str = ""


def _error(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def scheduler(config: Any) -> tuple[Check, Any]:
    """The batch system answers through the configured transport (its capacity query)."""
    from sidecars.core.daemon import make_backend

    backend, _files, link = make_backend(config)
    name = backend.display_name
    try:
        capacity = await asyncio.wait_for(backend.capacity(), 60)
        check = Check(
            "scheduler",
            OK,
            f"{name} via {config.transport.kind}: {capacity.nodes} nodes, "
            f"{capacity.cpus} CPUs, {capacity.memory_mib} MiB, {capacity.gpus} GPUs free",
        )
    except Exception as exc:  # every failure is a line of the report
        fixes = {
            "Slurm": "check slurm.* commands and slurm.environment (SLURM_CONF); does `sinfo` answer?",
            "HTCondor": "check htcondor.* commands, environment (CONDOR_CONFIG), pool/schedd and tokens",
        }
        check = Check(
            "scheduler",
            FAIL,
            f"{name} via {config.transport.kind}: {_error(exc)}",
            fixes.get(name, "check the backend section"),
        )
    return check, (backend, link)


def runtime_executable(config: Any) -> str | None:
    name = config.runtime.default
    return {
        "apptainer": config.runtime.apptainer.executable,
        "singularity": config.runtime.singularity.executable,
        "enroot": config.runtime.enroot.executable,
        "sandbox": config.runtime.sandbox.executable,
    }.get(name)


async def on_site(config: Any, link: Any, command: str) -> tuple[int, str]:
    """A shell command where the jobs run: here, or on the login node over the SSH link."""
    if link is not None:
        code, out, err = await link.run(command, 30)
        return code, (out or err).decode(errors="replace")
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def runtime(config: Any, link: Any) -> Check:
    executable = runtime_executable(config)
    if executable is None:
        return Check("runtime", OK, f"{config.runtime.default}: no container runtime needed")
    code, out = await on_site(config, link, f"command -v {shlex.quote(executable)}")
    if code == 0 and out.strip():
        return Check("runtime", OK, f"{config.runtime.default}: {out.strip()}")
    return Check(
        "runtime",
        FAIL,
        f"{config.runtime.default}: {executable} not found on the site's PATH",
        f"install {executable} on the compute nodes, or set runtime.{config.runtime.default}.executable",
    )


async def working_area(config: Any, link: Any) -> list[Check]:
    """pods_root writable with free space (where the jobs see it); state_dir writable (here)."""
    root = shlex.quote(config.pods_root)
    probe = f"{root}/.ilp-doctor-{os.getpid()}"
    code, out = await on_site(config, link, f"mkdir -p {root} && touch {probe} && rm -f {probe} && df -Pk {root}")
    if code != 0:
        checks = [
            Check(
                "working area",
                FAIL,
                f"{config.pods_root}: {out.strip() or 'not writable'}",
                "create pods_root on the shared filesystem, writable by the sidecar's account",
            )
        ]
    else:
        free = int(out.strip().splitlines()[-1].split()[3]) * 1024
        verdict = OK if free >= MIN_FREE_BYTES else WARN
        checks = [
            Check(
                "working area",
                verdict,
                f"{config.pods_root}: {free / 1024**3:.1f} GiB free",
                "" if verdict == OK else "free space on pods_root's filesystem (pods write volumes and logs)",
            )
        ]
    try:
        Path(config.state_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=config.state_dir):
            pass
        checks.append(Check("state directory", OK, f"{config.state_dir}: writable"))
    except OSError as exc:
        checks.append(
            Check(
                "state directory",
                FAIL,
                f"{config.state_dir}: {_error(exc)}",
                "make state_dir writable by the sidecar's account (it holds the pod database)",
            )
        )
    return checks


async def issuer(trusted: Any, timeout: float) -> Check:
    context = ssl.create_default_context(cafile=trusted.ca_file) if trusted.ca_file else None
    url = trusted.issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url, ssl=context) as answer:
                answer.raise_for_status()
                metadata = await answer.json()
            async with session.get(metadata["jwks_uri"], ssl=context) as answer:
                answer.raise_for_status()
                keys = (await answer.json()).get("keys", [])
    except Exception as exc:  # every failure is a line of the report
        return Check(
            f"IdP {trusted.issuer}",
            FAIL,
            f"discovery or JWKS: {_error(exc)}",
            "check auth.token.issuers[].issuer and ca_file; is the IdP reachable from here?",
        )
    if not keys:
        return Check(f"IdP {trusted.issuer}", FAIL, "the JWKS holds no keys", "the IdP publishes no signing key")
    return Check(f"IdP {trusted.issuer}", OK, f"discovery and JWKS: {len(keys)} keys")


async def token(config: Any) -> Check:
    """The site's own client gets a token and the sidecar's validator accepts it."""
    from interlink_provider.auth.exchange import OAuthClient
    from interlink_provider.auth.validate import TokenValidator

    tokens = config.staging.tokens if config.staging is not None else None
    if tokens is None or not config.auth.token.audiences:
        return Check("token", SKIP, "no site client configured (staging.tokens) to obtain one with")
    audience = config.auth.token.audiences[0]
    try:
        secret = Path(tokens.client_secret_file).read_text().strip()
    except OSError as exc:
        return Check("token", FAIL, f"client secret: {_error(exc)}", "check staging.tokens.client_secret_file")
    client = OAuthClient(tokens.issuer, tokens.client_id, secret, ca_file=tokens.ca_file)
    validator = TokenValidator(config.auth.token)
    try:
        got = await client.client_credentials("openid", audience)
        identity = await validator.validate(got.access_token)
    except Exception as exc:  # every failure is a line of the report
        return Check(
            "token",
            FAIL,
            f"for {audience}: {_error(exc)}",
            "check the client's grants at the IdP and auth.token (issuers, audiences)",
        )
    finally:
        await client.close()
        await validator.close()
    return Check("token", OK, f"client {tokens.client_id} got a token for {audience}, accepted as {identity.subject}")


def _rucio(config: Any) -> tuple[str, list[str]]:
    """The account Rucio logs us in as, and the XRootD endpoints of the default RSE."""
    from interlink_provider.staging.catalog import RucioCatalog

    with tempfile.TemporaryDirectory(prefix="ilp-doctor-") as state:
        client = RucioCatalog(config.staging.rucio, Path(state), config.staging.site).client()
        account = str(client.whoami().get("account"))
        rse = config.staging.default_rse
        protocols = client.get_protocols(rse) if rse else []
    return account, [f"{p['hostname']}:{p['port']}" for p in protocols if p.get("scheme") == "root"]


def _xrootd(url: str, seconds: int) -> None:
    from XRootD import client as xrd

    status, _ = xrd.FileSystem(url).ping(timeout=seconds)
    if not status.ok:
        raise ConnectionError(status.message.strip())


async def storage_token(tokens: Any, directory: str) -> Path:
    """A read token of the site's own client for the token storages, in a 0600 file."""
    from interlink_provider.auth.exchange import OAuthClient, write_private

    secret = Path(tokens.client_secret_file).read_text().strip()
    client = OAuthClient(tokens.issuer, tokens.client_id, secret, ca_file=tokens.ca_file)
    try:
        got = await client.client_credentials(" ".join(tokens.read_scopes), tokens.storage_audience)
    finally:
        await client.close()
    path = Path(directory) / "storage-token"
    write_private(path, got.access_token)
    return path


async def xrootd(config: Any, endpoint: str) -> Check:
    """The storage answers a ping, with a token where the trust network says it wants one."""
    from interlink_provider.staging.credentials import with_token

    tokens = config.staging.tokens
    url = f"root://{endpoint}//"
    with tempfile.TemporaryDirectory(prefix="ilp-doctor-") as scratch:
        try:
            how = "anonymous"
            if tokens is not None and endpoint in tokens.storage_endpoints:
                if tokens.x509_cert_dir:
                    os.environ["X509_CERT_DIR"] = tokens.x509_cert_dir  # read by XRootD's TLS
                url, how = with_token(url, await storage_token(tokens, scratch)), "with the site's read token"
            await asyncio.to_thread(_xrootd, url, config.staging.connection_window)
        except Exception as exc:  # every failure is a line of the report
            return Check(
                f"XRootD {endpoint}",
                FAIL,
                _error(exc),
                "is the storage up and reachable from here, and does it accept the site's tokens (staging.tokens)?",
            )
    return Check(f"XRootD {endpoint}", OK, f"answers ({how})")


async def staging(config: Any) -> list[Check]:
    if config.staging is None:
        return [Check("staging", SKIP, "no staging section: pods declaring data are refused")]
    checks = []
    endpoints = list(config.staging.tokens.storage_endpoints) if config.staging.tokens else []
    if config.staging.rucio is not None:
        try:
            account, served = await asyncio.to_thread(_rucio, config)
            checks.append(Check("Rucio", OK, f"{config.staging.rucio.host}: logged in as {account}"))
            endpoints += [e for e in served if e not in endpoints]
        except Exception as exc:  # every failure is a line of the report
            checks.append(
                Check(
                    "Rucio",
                    FAIL,
                    f"{config.staging.rucio.host}: {_error(exc)}",
                    "check staging.rucio (host, account, auth_type, password_file, ca_cert)",
                )
            )
    checks += [await xrootd(config, endpoint) for endpoint in endpoints]
    return checks


def certificates(config: Any, now: float | None = None) -> list[Check]:
    """The gRPC server's certificate: readable, matching its key, not expired nor close to it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if config.grpc is None:
        return []
    try:
        cert = x509.load_pem_x509_certificate(Path(config.grpc.tls_cert).read_bytes())
        key = serialization.load_pem_private_key(Path(config.grpc.tls_key).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        return [Check("gRPC TLS", FAIL, _error(exc), "check grpc.tls_cert and grpc.tls_key (PEM)")]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.PEM, public) != key.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        return [
            Check("gRPC TLS", FAIL, "the key does not belong to the certificate", "pair grpc.tls_cert with its key")
        ]
    return [expiry("gRPC TLS", cert, "renew the certificate", now)]


def expiry(name: str, cert: Any, fix: str, now: float | None = None) -> Check:
    """A certificate's verdict by its remaining validity: expired FAIL, under CERT_WARN_DAYS warn."""
    left = cert.not_valid_after_utc.timestamp() - (now or time.time())
    subject = cert.subject.rfc4514_string()
    if left <= 0:
        return Check(name, FAIL, f"{subject}: expired {-left / 86400:.0f} days ago", fix)
    if left < CERT_WARN_DAYS * 86400:
        return Check(name, WARN, f"{subject}: expires in {left / 86400:.1f} days", f"{fix} soon")
    return Check(name, OK, f"{subject}: valid for {left / 86400:.0f} more days")


def loaded(load: Any, path: str, example: str) -> tuple[Any, Check]:
    """The config, or None and the failed first line (a broken file is the first answer)."""
    try:
        return load(path), Check("config", OK, path)
    except Exception as exc:  # every failure is a line of the report
        return None, Check("config", FAIL, f"{path}: {_error(exc)}", f"every key is documented in {example}")


async def diagnose(path: str) -> list[Check]:
    from sidecars.core.config import load_config

    config, check = loaded(load_config, path, "examples/site.yaml")
    if config is None:
        return [check]
    checks = [Check("config", OK, f"{path}: {config.backend} via {config.transport.kind}, site {config.site_name}")]
    found, (backend, link) = await scheduler(config)
    try:
        checks += [found, await runtime(config, link), *await working_area(config, link)]
    finally:
        if link is not None:
            await link.close()
        await backend.close()
    timeout = config.auth.token.http_timeout_seconds
    checks += [await issuer(trusted, timeout) for trusted in config.auth.token.issuers]
    checks += [await token(config), *await staging(config), *certificates(config)]
    return checks


def render(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    styles = {OK: "green", WARN: "yellow", FAIL: "bold red", SKIP: "dim"}
    table = Table(title="interlink-provider doctor")
    for column in ("check", "verdict", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, f"[{styles[check.verdict]}]{check.verdict}[/]", check.detail, check.fix)
    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)


def doctor_cmd(args) -> int:
    from .doctor_gateway import diagnose_gateway, is_gateway_config

    run = diagnose_gateway if is_gateway_config(args.config) else diagnose
    checks = asyncio.run(run(args.config))
    if args.json:
        print(json.dumps([asdict(check) for check in checks], indent=1))
    else:
        render(checks)
    return 1 if any(check.verdict == FAIL for check in checks) else 0


def add_parser(sub) -> None:
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
