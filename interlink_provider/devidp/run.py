"""`interlink-provider devidp --config idp.yaml`: serve the dev IdP over HTTP or HTTPS."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path

from aiohttp import web

from interlink_provider import logsetup

from .config import IdPConfig
from .server import DevIdP, ensure_admin_token, make_app
from .tls import ensure_certificates

log = logging.getLogger("interlink_provider.devidp")


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
    await site.start()
    log.info("devidp issuer %s%s (signing key %s)", idp.issuer, f", CA {ca}" if ca else "", idp.keys.current_kid)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config: IdPConfig) -> None:
    logsetup.configure("INFO")
    asyncio.run(serve(config))
