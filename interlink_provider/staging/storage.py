"""Asking an XRootD server about one file: is the server up, may we read, what does it hold.

Blocking (the xrootd bindings): call these from a worker thread. Each answer names
what went wrong in the words a site admin searches for: the server cannot be
reached, the token or identity is refused, the file does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from .credentials import plain
from .errors import StagingError

# XRootD client status codes (XrdClStatus.hh) and server error numbers (XProtocol.hh).
ERR_AUTH_FAILED = 204  # the server refused our credentials at login
ERR_ERROR_RESPONSE = 400  # the server answered with an error (errno says which)
NOT_AUTHORIZED = 3010
NOT_FOUND = 3011


# What we use of the XRootD bindings, which carry no types (their objects are Any to mypy).
class XrdStatus(Protocol):
    """An XRootDStatus: every call answers one, beside its result."""

    ok: bool
    code: int  # the client's status code (ERR_*)
    errno: int  # the server's error number, when it answered with one
    message: str


class XrdStatInfo(Protocol):
    size: int


class XrdFileSystem(Protocol):
    """XRootD.client.FileSystem; a result is None unless its status is ok."""

    def stat(self, path: str) -> tuple[XrdStatus, XrdStatInfo | None]: ...

    def query(self, querycode: int, arg: str) -> tuple[XrdStatus, bytes | None]: ...

    def rm(self, path: str) -> tuple[XrdStatus, None]: ...


@dataclass
class FileProbe:
    url: str
    reachable: bool = False
    exists: bool = False
    authorized: bool = True
    size: int | None = None
    adler32: str | None = None  # as the server computes it
    error: str | None = None

    @property
    def verdict(self) -> str:
        if not self.reachable:
            return "unreachable"
        if not self.authorized:
            return "refused"
        if not self.exists:
            return "missing"
        return "ok"


def split_url(url: str) -> tuple[str, str]:
    """root://host:port//path -> ("root://host:port", "/path")."""
    parts = urlsplit(url)
    if parts.scheme not in ("root", "roots", "xroot", "xroots") or not parts.netloc:
        raise StagingError(f"{url!r} is not an XRootD URL (root://host[:port]//path)")
    path = parts.path
    while path.startswith("//"):
        path = path[1:]
    if not path or path == "/":
        raise StagingError(f"{url!r} names no path")
    return f"{parts.scheme}://{parts.netloc}", path + (f"?{parts.query}" if parts.query else "")


def _filesystem(url: str) -> tuple[XrdFileSystem, str]:
    """The server's FileSystem and the path in it. A token named in the URL (`xrd.ztn`)
    must be on the connection's own URL: it is presented once, at login."""
    from XRootD import client

    server, path = split_url(url)
    path, _, query = path.partition("?")
    return client.FileSystem(server + (f"//?{query}" if query else "")), path


def classify(status: XrdStatus) -> tuple[bool, bool]:
    """(reachable, authorized) from an XRootD status."""
    if status.code == ERR_AUTH_FAILED:
        return True, False
    if status.code != ERR_ERROR_RESPONSE:
        return False, True  # connection, address, timeout: the server never answered
    return True, status.errno != NOT_AUTHORIZED


def probe(url: str, with_checksum: bool = True) -> FileProbe:
    """Reachability, permission, size and the server's adler32 of one file."""
    from XRootD.client.flags import QueryCode

    result = FileProbe(plain(url))
    fs, path = _filesystem(url)
    status, info = fs.stat(path)
    if not status.ok:
        result.reachable, result.authorized = classify(status)
        result.error = str(status.message).strip()
        return result
    result.reachable = result.exists = True
    result.size = info.size if info is not None else None  # an ok stat always carries its info
    if with_checksum:
        status, answer = fs.query(QueryCode.CHECKSUM, path)
        if status.ok and answer:
            text = answer.decode(errors="replace").strip("\x00 \n").split()
            result.adler32 = text[-1].lower() if text and text[0] == "adler32" else None
        elif not status.ok:
            result.error = f"checksum query failed: {str(status.message).strip()}"
    return result


def remove(url: str) -> None:
    fs, path = _filesystem(url)
    status, _ = fs.rm(path)
    if not status.ok:
        raise StagingError(f"cannot remove {plain(url)}: {str(status.message).strip()}")
