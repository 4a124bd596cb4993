"""`interlink-provider doctor --config site.yaml`: can this sidecar work, and if not, why?

Each check talks to the real dependency with the configured credentials, the way the
sidecar would (same backend, transport, validator and clients), and says what to fix.
A site admin runs it after an install, after a change, or when pods are stuck; it exits
non-zero when any check fails.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from . import exits
from .checks import FAIL, OK, SKIP, WARN, Check, describe, issuer, server_certificate

MIN_FREE_BYTES = 1024**3  # below this the working area is a warning


async def scheduler(config: Any) -> tuple[Check, Any]:
    """The batch system answers through the configured transport (its capacity query)."""
    from sidecars.core.kits.backend import ReportsCapacity
    from sidecars.daemon.site import make_site

    site = make_site(config)
    backend, link = site.backend, site.link
    name = backend.display_name
    if not isinstance(backend, ReportsCapacity):
        skipped = Check("scheduler", SKIP, f"{name} via {config.transport.kind} does not report its capacity")
        return skipped, (backend, link)
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
            f"{name} via {config.transport.kind}: {describe(exc)}",
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
                f"{config.state_dir}: {describe(exc)}",
                "make state_dir writable by the sidecar's account (it holds the pod database)",
            )
        )
    return checks


async def job_accounts(config: Any, link: Any) -> Check:
    """The accounts pods run as exist where the jobs run, and none is root under another name."""
    auth = config.auth
    names = sorted({auth.unix_socket_account, *(rule.account for rule in auth.identities.rules)} - {None})
    if not names:
        return Check("job accounts", WARN, "no account is named: every caller is refused", "add auth.identities.rules")
    words = " ".join(shlex.quote(name) for name in names)
    code, out = await on_site(config, link, f'for a in {words}; do echo "$a $(id -u -- "$a" 2>/dev/null)"; done')
    uids = dict((line.split() + [""])[:2] for line in out.splitlines() if line.strip()) if code == 0 else {}
    missing = [name for name in names if not uids.get(name, "").isdigit()]
    root = [name for name in names if uids.get(name) == "0"]
    if missing:
        return Check(
            "job accounts",
            FAIL,
            f"no such account where jobs run: {', '.join(missing)}",
            "create the accounts on the login and compute nodes, or fix auth.unix_socket_account / the rules",
        )
    if root and not auth.allow_jobs_as_root:
        return Check(
            "job accounts",
            FAIL,
            f"uid 0 (root under another name): {', '.join(root)}; pods mapped to them are refused",
            "map those identities to unprivileged accounts",
        )
    if root:
        return Check("job accounts", WARN, f"jobs run as root: {', '.join(root)}", "auth.allow_jobs_as_root is on")
    return Check("job accounts", OK, ", ".join(f"{name} (uid {uids[name]})" for name in names))


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
        return Check("token", FAIL, f"client secret: {describe(exc)}", "check staging.tokens.client_secret_file")
    client = OAuthClient(tokens.issuer, tokens.client_id, secret, ca_file=tokens.ca_file)
    validator = TokenValidator(config.auth.token)
    try:
        got = await client.client_credentials("openid", audience)
        identity = await validator.validate(got.access_token)
    except Exception as exc:  # every failure is a line of the report
        return Check(
            "token",
            FAIL,
            f"for {audience}: {describe(exc)}",
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
                describe(exc),
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
                    f"{config.staging.rucio.host}: {describe(exc)}",
                    "check staging.rucio (host, account, auth_type, password_file, ca_cert)",
                )
            )
    checks += [await xrootd(config, endpoint) for endpoint in endpoints]
    return checks


def certificates(config: Any, now: float | None = None) -> list[Check]:
    """The servers' certificates (gRPC; REST over TLS): readable, matching their keys, not expired nor close to it."""
    checks = []
    if config.grpc is not None:
        keys = "grpc.tls_cert and grpc.tls_key"
        checks.append(server_certificate("gRPC TLS", config.grpc.tls_cert, config.grpc.tls_key, keys, now))
    if config.listen.tls_cert and config.listen.tls_key:
        keys = "listen.tls_cert and listen.tls_key"
        checks.append(server_certificate("REST TLS", config.listen.tls_cert, config.listen.tls_key, keys, now))
    return checks


async def diagnose(path: str) -> list[Check]:
    from sidecars.daemon.config import load_config

    config = exits.load_config(load_config, path)  # a file that does not load: a Refusal, exit 2
    checks = [Check("config", OK, f"{path}: {config.backend} via {config.transport.kind}, site {config.site_name}")]
    found, (backend, link) = await scheduler(config)
    try:
        checks += [found, await runtime(config, link), *await working_area(config, link)]
        checks.append(await job_accounts(config, link))
    finally:
        if link is not None:
            await link.close()
        await backend.close()
    timeout = config.auth.token.http_timeout_seconds
    checks += [await issuer(trusted, timeout) for trusted in config.auth.token.issuers]
    checks += [await token(config), *await staging(config), *certificates(config)]
    return checks
