"""Opening a daemon's listeners: a port in use or a bad socket path ends the daemon with one
clear line (which address, why), not a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web


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


async def unix_site(runner: web.AppRunner, path: str, mode: int) -> str:
    """Serve `runner` on a unix socket at `path`, with permissions `mode`; its address."""
    prepare_socket_path(path)
    await web.UnixSite(runner, path).start()
    os.chmod(path, mode)
    return f"unix://{path}"
