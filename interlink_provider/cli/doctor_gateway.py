"""`interlink-provider doctor --config gateway.yaml`: can this gateway reach and use its sites?

The same checks the gateway's own start-up would stumble on, one line each: the config,
the IdP (discovery and JWKS), the gateway's token for every site audience, each site's
gRPC API over TLS answering a Ping with that token, the TLS certificates involved (the
site's server certificate and any client certificate; the gateway's own TCP listener's), the
listener's token file and the users' grants file.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import time
from pathlib import Path
from typing import Any

import grpc

from . import exits
from .checks import FAIL, OK, SKIP, Check, describe, expiry, issuer, server_certificate


def is_gateway_config(path: str) -> bool:
    """A gateway config names `sites`; a sidecar's never does."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "sites" in raw


async def service_token(config: Any, audience: str) -> tuple[Check, str | None]:
    from interlink_provider.auth.exchange import OAuthClient

    identity = config.identity
    name = f"token for {audience}"
    try:
        secret = Path(identity.client_secret_file).read_text().strip()
    except OSError as exc:
        return Check(name, FAIL, f"client secret: {describe(exc)}", "check identity.client_secret_file"), None
    client = OAuthClient(identity.issuer, identity.client_id, secret, ca_file=identity.ca_file)
    try:
        token = await client.client_credentials(" ".join(identity.scopes), audience)
    except Exception as exc:  # every failure is a line of the report
        return Check(
            name,
            FAIL,
            describe(exc),
            f"may client {identity.client_id} get scopes "
            f"{' '.join(identity.scopes)} for audience {audience} at the IdP?",
        ), None
    finally:
        await client.close()
    left = token.expires_at - time.time()
    return Check(name, OK, f"client {identity.client_id}: a token valid for {left:.0f} s"), token.access_token


async def site_ping(link: Any, token: str | None) -> Check:
    """The site's gRPC API over TLS, answering a Ping as the gateway will call it."""
    from interlink_provider.rpc.client import bearer, offloader, open_channel
    from interlink_provider.rpc.offloader.v1 import offloader_pb2 as pb

    name = f"site {link.name}"
    if token is None:
        return Check(name, SKIP, f"{link.target}: no token for {link.audience} to call it with")
    channel = open_channel(link.target, link.ca_file, link.cert_file, link.key_file)
    try:
        node = await offloader(channel).Ping(pb.PingRequest(), metadata=bearer(token), timeout=15)
    except grpc.aio.AioRpcError as exc:
        fixes = {
            grpc.StatusCode.UNAVAILABLE: "is the sidecar's gRPC API up and reachable, and does ca_file "
            "(and cert_file/key_file for mTLS) match its TLS?",
            grpc.StatusCode.UNAUTHENTICATED: "the site refuses the gateway's token: does its auth.token "
            "trust this issuer and accept this audience?",
            grpc.StatusCode.PERMISSION_DENIED: "the site maps the gateway to no account or denies it "
            "compute.read: check its auth.identities",
        }
        return Check(
            name,
            FAIL,
            f"{link.target}: {exc.code().name}: {exc.details()}",
            fixes.get(exc.code(), "see the sidecar's log"),
        )
    finally:
        await channel.close()
    return Check(
        name,
        OK,
        f"{link.target}: site {node.site} (interlink-provider {node.version}), "
        f"{node.capacity.cpu} CPUs, {node.capacity.memory}, {node.capacity.pods} pods free",
    )


def _server_certificate(target: str, ca_file: str | None) -> bytes:
    host, _, port = target.rpartition(":")
    return ssl.get_server_certificate((host, int(port)), ca_certs=ca_file, timeout=10).encode()


async def site_certificates(link: Any) -> list[Check]:
    from cryptography import x509

    checks = []
    try:
        pem = await asyncio.to_thread(_server_certificate, link.target, link.ca_file)
        checks.append(
            expiry(
                f"site {link.name} TLS",
                x509.load_pem_x509_certificate(pem),
                "the site's admin must renew its grpc.tls_cert",
            )
        )
    except (OSError, ValueError, ssl.SSLError) as exc:
        checks.append(
            Check(
                f"site {link.name} TLS",
                FAIL,
                f"{link.target}: {describe(exc)}",
                "is the sidecar up, and is it serving TLS that ca_file verifies?",
            )
        )
    if link.cert_file:
        try:
            cert = x509.load_pem_x509_certificate(Path(link.cert_file).read_bytes())
            checks.append(expiry(f"site {link.name} client certificate", cert, "renew sites[].cert_file"))
        except (OSError, ValueError) as exc:
            checks.append(Check(f"site {link.name} client certificate", FAIL, describe(exc), "check sites[].cert_file"))
    return checks


def grants_file(config: Any) -> Check:
    path = config.identities.grants_file
    if not path:
        return Check("grants file", SKIP, "not set: users' grants are kept in memory only (lost at a restart)")
    file = Path(path)
    if file.exists():
        mode = stat.S_IMODE(file.stat().st_mode)
        if mode & 0o077:
            return Check(
                "grants file",
                FAIL,
                f"{path}: mode {mode:o}, readable by others",
                f"chmod 600 {path} (it holds users' refresh tokens)",
            )
        return Check("grants file", OK, f"{path}: 0600")
    if os.access(file.parent, os.W_OK):
        return Check("grants file", OK, f"{path}: not written yet, its directory is writable")
    return Check("grants file", FAIL, f"{file.parent}: not writable", "make the directory writable by the gateway")


def listener(config: Any) -> list[Check]:
    """The TCP listener's own certificate and token file, when it has them (the socket has neither)."""
    from interlink_provider.gateway.access import TokenFileProblem, read_token

    listen = config.listen
    checks: list[Check] = []
    if not (listen.host and listen.port):
        return checks
    if listen.tls_cert and listen.tls_key:
        keys = "listen.tls_cert and listen.tls_key"
        checks.append(server_certificate("interLink API TLS", listen.tls_cert, listen.tls_key, keys))
    if listen.token_file:
        try:
            read_token(listen.token_file)
            checks.append(Check("interLink API token", OK, f"{listen.token_file}: a token, not readable by others"))
        except TokenFileProblem as exc:
            checks.append(Check("interLink API token", FAIL, str(exc), "the gateway does not start with it"))
    return checks


async def diagnose_gateway(path: str) -> list[Check]:
    from interlink_provider.gateway.config import load_config

    config = exits.load_config(load_config, path)  # a file that does not load: a Refusal, exit 2
    checks = [Check("config", OK, f"{path}: gateway for sites {', '.join(s.name for s in config.sites)}")]
    checks += listener(config)
    checks.append(await issuer(config.identity, 15))
    tokens: dict[str, str | None] = {}
    for audience in dict.fromkeys(site.audience for site in config.sites):
        check, tokens[audience] = await service_token(config, audience)
        checks.append(check)
    for link in config.sites:
        checks += [await site_ping(link, tokens[link.audience]), *await site_certificates(link)]
    checks.append(grants_file(config))
    return checks
