"""`interlink-provider devidp --config idp.yaml`: serve the dev IdP over HTTPS on loopback.

Plain HTTP or an address other than loopback only with `--insecure-dev` (a throwaway test
IdP), which says so loudly at start; without it the devidp refuses to start (exit 2).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import ssl
from pathlib import Path

from aiohttp import web

from interlink_provider import logsetup
from interlink_provider.auth.validate import DEVELOPMENT_CLAIM
from interlink_provider.listeners import CannotListen, opening

from .config import IdPConfig
from .server import DevIdP, ensure_admin_token, make_app
from .tls import ensure_certificates

log = logging.getLogger("interlink_provider.devidp")


INSECURE_FLAG = "--insecure-dev"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name, or "" (every address)


def listener_refusal(config: IdPConfig) -> str | None:
    """Why the devidp will not serve its configured listener without --insecure-dev, if it will not."""
    where = f"{config.host or '*'}:{config.port}"
    plain, exposed = not config.tls.enabled, not is_loopback(config.host)
    if not plain and not exposed:
        return None
    if plain and exposed:
        what = f"serve plain HTTP on {where}, not a loopback address"
        change = "set host to a loopback address (127.0.0.1) and give it tls (tls: {enabled: true})"
    elif plain:
        what, change = f"serve plain HTTP on {where}", "give it tls (tls: {enabled: true})"
    else:
        what, change = f"listen on {where}, not a loopback address", "set host to a loopback address (127.0.0.1)"
    return f"devidp: refusing to {what}: {change}, or start with {INSECURE_FLAG} for a throwaway test IdP"


def server_ssl(config: IdPConfig) -> tuple[ssl.SSLContext | None, Path | None]:
    if not config.tls.enabled:
        return None, None
    ca = None
    cert, key = config.tls.cert_file, config.tls.key_file
    if not cert or not key:
        ca, cert_path, key_path = ensure_certificates(Path(config.state_dir), config.host)
        cert, key = str(cert_path), str(key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context, ca


def prepare_state(config: IdPConfig) -> None:
    """The state directory (0700) and the admin token in it."""
    Path(config.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    ensure_admin_token(config)


async def serve(config: IdPConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    prepare_state(config)
    idp = DevIdP(config)
    context, ca = server_ssl(config)
    runner = web.AppRunner(make_app(idp), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
    try:
        with opening():
            await site.start()
    except CannotListen:
        await runner.cleanup()
        raise
    log.info(
        "devidp issuer %s%s (signing key %s); its tokens are development tokens (claim %s)",
        idp.issuer,
        f", CA {ca}" if ca else "",
        idp.keys.current_kid,
        DEVELOPMENT_CLAIM,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config: IdPConfig, insecure_dev: bool = False) -> None:
    """Serve until SIGTERM/SIGINT. A listener refused (see listener_refusal) ends it with one ERROR
    line and exit code 2, a listener that cannot be opened with exit code 1."""
    logsetup.configure("INFO")
    refusal = listener_refusal(config)
    if insecure_dev:
        log.warning(
            "devidp: INSECURE: started with %s, a throwaway test IdP for tests only, never for real users: "
            "%s on %s:%s; its tokens are development tokens (claim %s), which sites refuse unless their "
            "trusted issuer says development: true",
            INSECURE_FLAG,
            "plain HTTP" if not config.tls.enabled else "HTTPS",
            config.host or "*",
            config.port,
            DEVELOPMENT_CLAIM,
        )
    elif refusal:
        log.error("%s", refusal)
        raise SystemExit(2)
    try:
        asyncio.run(serve(config))
    except CannotListen as exc:
        log.error("devidp cannot start: %s", exc)
        raise SystemExit(1) from None
