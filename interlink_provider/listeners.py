"""Opening a daemon's listeners: a port in use or a bad socket path ends the daemon with one
clear line (which address, why), not a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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
