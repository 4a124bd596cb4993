"""Opening a daemon's listeners: a port in use or a bad socket path ends the daemon with one
clear line (which address, why), not a traceback.

What the sidecar's and the gateway's listeners share: unix sockets that never exist with wider
permissions than configured (bound under a restrictive umask), TLS for TCP listeners (a server
certificate; with a client CA, client certificates are required), and which TCP addresses are
loopback (the only ones that may be served in plain HTTP without an explicit override)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


class CannotListen(OSError):
    """A listener could not be opened; the daemon logs the reason and exits 1."""


@contextmanager
def opening() -> Iterator[None]:
    """Turn the OSError of binding a listener into CannotListen."""
    try:
        yield
    except CannotListen:
        raise
    except OSError as exc:
        raise CannotListen(str(exc)) from exc


def prepare_socket_path(path: str) -> None:
    """Make room for a unix socket: its directory exists, a stale socket of a killed daemon is gone."""
    socket_path = Path(path)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if socket_path.exists() or socket_path.is_symlink():
        socket_path.unlink()


def bind_unix(path: str, mode: int) -> socket.socket:
    """A unix socket bound at `path` that is never more open than `mode`: bound while the umask
    leaves only the owner's bits (no other account can connect in between), then given `mode`."""
    prepare_socket_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        previous = os.umask(0o177)  # process-wide, but restored before anything else runs on this loop
        try:
            sock.bind(path)
        finally:
            os.umask(previous)
        os.chmod(path, mode)
    except BaseException:
        sock.close()
        raise
    return sock


async def unix_site(runner: web.AppRunner, path: str, mode: int) -> str:
    """Serve `runner` on a unix socket at `path`, with permissions `mode`; its address."""
    await web.SockSite(runner, bind_unix(path, mode)).start()
    return f"unix://{path}"


def via_unix_socket(request: web.Request) -> bool:
    """Whether a request came over a unix socket (its access is the socket file's mode)."""
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str)


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches only this machine: `localhost`, 127.0.0.0/8, ::1.
    Anything else (0.0.0.0, ::, an interface's address, another name) is reachable from outside."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_tls(cert: str | None, key: str | None, client_ca: str | None = None) -> ssl.SSLContext | None:
    """TLS 1.2+ for a TCP listener (None without a certificate: plain HTTP); with `client_ca`, a
    client certificate it signed is required in the handshake (a client without one never reaches
    the API)."""
    if not (cert and key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if client_ca:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise CannotListen(f"TLS certificate {cert} / key {key} / client CA {client_ca or '-'}: {exc}") from exc
    return context


async def tcp_site(runner: web.AppRunner, host: str, port: int, tls: ssl.SSLContext | None) -> str:
    """Serve `runner` on host:port (TLS when given); its address. Plain HTTP off loopback (allowed
    by the config only with `insecure_plain_tcp`) is said loudly at every start."""
    if tls is None and not is_loopback(host):
        log.warning(
            "listen.insecure_plain_tcp: serving plain HTTP on %s:%d, reachable from other machines: "
            "bearer tokens and pods cross the network in clear text (set listen.tls_cert and listen.tls_key)",
            host,
            port,
        )
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    return f"{'https' if tls else 'http'}://{host}:{port}"


def check_listen(
    socket: str | None,
    host: str | None,
    port: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    client_ca: str | None,
    tcp_only: Mapping[str, object],
) -> None:
    """The rules every daemon's `listen` section shares (ValueError naming the keys): an address,
    a certificate with its key, client certificates only over TLS, and the TCP-only keys
    (`tcp_only`: name -> value) only with a TCP listener."""
    if not socket and not (host and port):
        raise ValueError("listen needs `socket`, or `host` and `port`")
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("listen.tls_cert and listen.tls_key go together")
    if client_ca and not tls_cert:
        raise ValueError("listen.client_ca needs listen.tls_cert and listen.tls_key (client certificates are TLS)")
    keys = ", ".join(f"listen.{name}" for name, value in tcp_only.items() if value)
    if not (host and port) and keys:
        raise ValueError(
            f"{keys}: only for the TCP listener (host and port); the unix socket is guarded by listen.socket_mode"
        )
