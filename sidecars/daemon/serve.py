"""`interlink-provider sidecar --config site.yaml`: wiring and the serve loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import stat
from pathlib import Path

from aiohttp import web

from interlink_provider import logsetup, sdnotify
from interlink_provider.listeners import CannotListen, opening, server_tls, tcp_site, unix_site
from interlink_provider.staging.engine import Stager
from interlink_provider.telemetry import tracing
from sidecars.core.adapters.authn import Authenticator
from sidecars.core.adapters.rest import make_app
from sidecars.core.domain.accounts import JobAccounts
from sidecars.core.domain.reconciler import Reconciler
from sidecars.core.domain.service import SiteService
from sidecars.core.domain.store import DamagedStore, Store
from sidecars.core.kits.transport import current_user
from sidecars.daemon import state
from sidecars.daemon.config import SiteConfig
from sidecars.daemon.site import make_site, prepare_shared_pods_root

log = logging.getLogger("interlink_provider.sidecar")
# The exit status of a start refused over a damaged state database (the CLI's Exit.DAMAGED,
# sysexits' EX_CONFIG): the systemd unit does not restart on it, so it does not loop.
DAMAGED_STATE = 78


async def _listen(runner: web.AppRunner, config: SiteConfig) -> list[str]:
    addresses = []
    listen = config.listen
    if listen.socket:
        addresses.append(await unix_site(runner, listen.socket, listen.socket_mode))
    if listen.host and listen.port:
        tls = server_tls(listen.tls_cert, listen.tls_key, listen.client_ca)
        addresses.append(await tcp_site(runner, listen.host, listen.port, tls))
    return addresses


def warn_if_untraversable(config: SiteConfig) -> None:
    """Jobs of other accounts must reach their pod directories through pods_root's parents."""
    accounts = {r.account for r in config.auth.identities.rules} | {config.auth.unix_socket_account}
    if not (accounts - {None, current_user()}):  # a single-account site: the sidecar's own login
        return
    path = Path(config.pods_root)
    for parent in [*reversed(path.parents)]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            log.warning(
                "%s is not traversable by other accounts: jobs of mapped accounts cannot reach their pods under %s",
                parent,
                path,
            )
            return


async def serve(config: SiteConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    if config.auth.allow_jobs_as_root:
        log.warning(
            "auth.allow_jobs_as_root is on: jobs of accounts mapped to root (or to uid 0) run as the superuser, "
            "with full control of this machine and of every node they land on"
        )
    if config.transport.kind in ("local", "slurmrestd"):
        warn_if_untraversable(config)
    if config.agents is not None:
        prepare_shared_pods_root(config.pods_root)
    store = Store(state.database_of(config))
    stager = Stager(config.staging, Path(config.state_dir)) if config.staging else None
    site = make_site(config)
    backend = site.backend
    accounts = JobAccounts(site.files, allow_root=config.auth.allow_jobs_as_root)
    images = config.images.open() if config.images else None
    service = SiteService(config, backend, store, stager, site.files, accounts, images)
    await service.load()
    reconciler = Reconciler(config, service.book, backend, service.files, service.submissions, service.staging)
    await reconciler.recover()
    reconciler.start()
    authenticator = Authenticator(config.auth)
    app = make_app(service, reconciler, authenticator, config.listen.max_body_bytes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    grpc_server = None
    try:
        with opening():
            if config.grpc is not None:
                from sidecars.core.adapters.grpc_api import start_server

                grpc_server = await start_server(config.grpc, service, authenticator)
            addresses = await _listen(runner, config)
        log.info(
            "sidecar for site %s serving on %s (%d pods known)",
            config.site_name,
            ", ".join(addresses),
            len(service.book),
        )
        pinging = sdnotify.ready(f"site {config.site_name}: {len(service.book)} pods")
        await stop.wait()
        log.info("stopping")
        await sdnotify.stopping(pinging)
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await reconciler.stop()
        await service.stop()
        if service.staging is not None:
            await service.staging.stop()
        await runner.cleanup()
        await authenticator.close()
        await store.close()
        await site.close()


def run(config: SiteConfig) -> None:
    logsetup.configure()
    tracing.configure(f"interlink-provider-sidecar-{config.site_name}")
    try:
        asyncio.run(serve(config))
    except CannotListen as exc:  # a port in use may be free at the next start
        log.error("sidecar for site %s cannot start: %s", config.site_name, exc)
        raise SystemExit(1) from None
    except DamagedStore as exc:  # it stays damaged: no restart loop (the unit's RestartPreventExitStatus)
        log.error("sidecar for site %s cannot start: %s", config.site_name, exc)
        raise SystemExit(DAMAGED_STATE) from None
    finally:
        tracing.shutdown()
