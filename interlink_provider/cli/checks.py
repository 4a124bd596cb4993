"""What every doctor check reports, and the checks both doctors share (an IdP, a certificate)
and the table they are shown in."""

from __future__ import annotations

import shutil
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiohttp

if TYPE_CHECKING:  # cryptography is imported only by the checks that read a certificate
    from cryptography import x509

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
CERT_WARN_DAYS = 14


class IssuerRef(Protocol):
    """Where an IdP is and how to trust its HTTPS: a site's trusted issuer, a gateway's own IdP."""

    @property
    def issuer(self) -> str: ...

    @property
    def ca_file(self) -> str | None: ...


@dataclass
class Check:
    name: str
    verdict: str
    detail: str
    fix: str = ""


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def issuer(trusted: IssuerRef, timeout: float) -> Check:
    context = ssl.create_default_context(cafile=trusted.ca_file) if trusted.ca_file else True  # True: system CAs
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
            f"discovery or JWKS: {describe(exc)}",
            "check auth.token.issuers[].issuer and ca_file; is the IdP reachable from here?",
        )
    if not keys:
        return Check(f"IdP {trusted.issuer}", FAIL, "the JWKS holds no keys", "the IdP publishes no signing key")
    return Check(f"IdP {trusted.issuer}", OK, f"discovery and JWKS: {len(keys)} keys")


def expiry(name: str, cert: x509.Certificate, fix: str, now: float | None = None) -> Check:
    """A certificate's verdict by its remaining validity: expired FAIL, under CERT_WARN_DAYS warn."""
    left = cert.not_valid_after_utc.timestamp() - (now or time.time())
    subject = cert.subject.rfc4514_string()
    if left <= 0:
        return Check(name, FAIL, f"{subject}: expired {-left / 86400:.0f} days ago", fix)
    if left < CERT_WARN_DAYS * 86400:
        return Check(name, WARN, f"{subject}: expires in {left / 86400:.1f} days", f"{fix} soon")
    return Check(name, OK, f"{subject}: valid for {left / 86400:.0f} more days")


def server_certificate(name: str, cert_file: str, key_file: str, keys: str, now: float | None = None) -> Check:
    """A server's own certificate: readable, matching its key, not expired nor close to it
    (`keys` names the config keys, for the fix)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        return Check(name, FAIL, describe(exc), f"check {keys} (PEM)")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.PEM, public) != key.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        return Check(name, FAIL, "the key does not belong to the certificate", f"pair {keys}")
    return expiry(name, cert, "renew the certificate", now)


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
